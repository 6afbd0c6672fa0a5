//! `page` and `pageSize`, shared by every listing.

use serde::Deserialize;

use crate::domain::PageRequest;
use crate::error::{AppError, Result};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    pub page: Option<u32>,
    /// Records per page: default 20, at most 100 (larger values are capped).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
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
