//! `page` and `pageSize`, shared by every listing.

use serde::Deserialize;

use crate::domain::PageRequest;
use crate::error::{AppError, Result};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageParams {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

impl PageParams {
    /// `page` ≥ 1 and `pageSize` ≥ 1; a `pageSize` above the maximum is capped, as bk-ci does.
    pub fn validate(&self) -> Result<PageRequest> {
        let page = self.page.unwrap_or(1);
        let page_size = self.page_size.unwrap_or(PageRequest::DEFAULT_PAGE_SIZE);
        if page == 0 {
            return Err(AppError::BadRequest(
                "query parameter page must be at least 1".to_owned(),
            ));
        }
        if page_size == 0 {
            return Err(AppError::BadRequest(format!(
                "query parameter pageSize must be between 1 and {}",
                PageRequest::MAX_PAGE_SIZE
            )));
        }
        Ok(PageRequest {
            page,
            page_size: page_size.min(PageRequest::MAX_PAGE_SIZE),
        })
    }
}
