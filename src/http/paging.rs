//! `page` and `pageSize`, shared by every listing.

use serde::{Deserialize, Serialize};

use crate::domain::PageRequest;
use crate::http::extract::Refusal;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    pub page: Option<PageNumber>,
    /// Records per page: default 20, at most 100 (larger values are capped).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    pub page_size: Option<PageSize>,
}

impl PageParams {
    /// The page asked for, with the defaults filled in.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            page: self.page.map_or(1, |PageNumber(page)| page),
            page_size: self
                .page_size
                .map_or(PageRequest::DEFAULT_PAGE_SIZE, |PageSize(size)| size),
        }
    }
}

/// `page`: 1 or more.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u32")]
pub struct PageNumber(u32);

impl TryFrom<u32> for PageNumber {
    type Error = Refusal;

    fn try_from(page: u32) -> Result<Self, Refusal> {
        if page == 0 {
            return Err(Refusal(
                "query parameter page must be at least 1".to_owned(),
            ));
        }
        Ok(Self(page))
    }
}

/// `pageSize`: 1 or more; a size above the maximum is capped, as bk-ci does.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "u32")]
pub struct PageSize(u32);

impl TryFrom<u32> for PageSize {
    type Error = Refusal;

    fn try_from(size: u32) -> Result<Self, Refusal> {
        if size == 0 {
            return Err(Refusal(format!(
                "query parameter pageSize must be between 1 and {}",
                PageRequest::MAX_PAGE_SIZE
            )));
        }
        Ok(Self(size.min(PageRequest::MAX_PAGE_SIZE)))
    }
}

/// One page of results, in bk-ci's `Page` shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub count: u64,
    pub page: u32,
    pub page_size: u32,
    pub total_pages: u64,
    pub records: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(request: PageRequest, count: u64, records: Vec<T>) -> Self {
        Self {
            count,
            page: request.page,
            page_size: request.page_size,
            total_pages: count.div_ceil(u64::from(request.page_size)),
            records,
        }
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn total_pages_round_up() {
        let request = PageRequest {
            page: 3,
            page_size: 20,
        };
        assert_eq!(Page::new(request, 41, Vec::<()>::new()).total_pages, 3);
        assert_eq!(Page::new(request, 0, Vec::<()>::new()).total_pages, 0);
        assert_eq!(Page::new(request, 40, Vec::<()>::new()).total_pages, 2);
    }
}
