//! `page` and `pageSize`, shared by every listing.

use serde::{Deserialize, Serialize};

use crate::domain::PageRequest;
use crate::http::extract::Refusal;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-based page number (default 1; 0 or less means the default, as in bk-ci).
    #[param(value_type = Option<i64>, maximum = 4294967295_i64)]
    pub page: Option<PageNumber>,
    /// Records per page: default 20 (also for 0 or less, as in bk-ci), at most 100 (larger
    /// values are capped).
    #[param(value_type = Option<i64>, maximum = 4294967295_i64)]
    pub page_size: Option<PageSize>,
}

impl PageParams {
    /// The page asked for, with the defaults filled in.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            page: self.page.unwrap_or_default().0,
            page_size: self.page_size.unwrap_or_default().0,
        }
    }
}

/// `page`: 1 or more; 0 or less is the first page.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct PageNumber(u32);

impl Default for PageNumber {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<String> for PageNumber {
    type Error = Refusal;

    fn try_from(text: String) -> Result<Self, Refusal> {
        Ok(positive("page", &text)?.map_or_else(Self::default, Self))
    }
}

/// `pageSize`: 1 or more, capped at the maximum as bk-ci does; 0 or less is the default.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct PageSize(u32);

impl Default for PageSize {
    fn default() -> Self {
        Self(PageRequest::DEFAULT_PAGE_SIZE)
    }
}

impl TryFrom<String> for PageSize {
    type Error = Refusal;

    fn try_from(text: String) -> Result<Self, Refusal> {
        Ok(
            positive("pageSize", &text)?.map_or_else(Self::default, |size| {
                Self(size.min(PageRequest::MAX_PAGE_SIZE))
            }),
        )
    }
}

/// A paging parameter: an integer from `i64::MIN` (the document's `int64`) to `u32::MAX`;
/// `None` when it is 0 or negative, which bk-ci reads as "the default".
fn positive(name: &str, text: &str) -> Result<Option<u32>, Refusal> {
    use std::num::IntErrorKind::{NegOverflow, PosOverflow};
    let out_of_range = || {
        Refusal(format!(
            "query parameter {name} must be an integer from {} to {} (0 or less means the \
             default), got {text:?}",
            i64::MIN,
            u32::MAX
        ))
    };
    match text.parse::<i64>() {
        Ok(number) if number <= 0 => Ok(None),
        Ok(number) => u32::try_from(number).map(Some).map_err(|_| out_of_range()),
        Err(e) if matches!(e.kind(), PosOverflow | NegOverflow) => Err(out_of_range()),
        Err(_) => Err(Refusal(format!(
            "query parameter {name} must be an integer, got {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> Result<u32, String> {
        PageSize::try_from(text.to_owned())
            .map(|PageSize(size)| size)
            .map_err(|Refusal(message)| message)
    }

    #[test]
    fn zero_or_negative_means_the_default_and_junk_is_refused() {
        assert_eq!(size("7"), Ok(7));
        assert_eq!(size("+7"), Ok(7));
        assert_eq!(size("1000"), Ok(PageRequest::MAX_PAGE_SIZE));
        for default in ["0", "00", "-0", "-1", "-9223372036854775808"] {
            assert_eq!(
                size(default),
                Ok(PageRequest::DEFAULT_PAGE_SIZE),
                "{default}"
            );
        }
        for junk in ["", "-", "abc", "1.5", "-1.5", "--1", " 1"] {
            assert!(size(junk).unwrap_err().contains("an integer"), "{junk:?}");
        }
        for out_of_range in ["4294967296", "-9223372036854775809"] {
            let refusal = size(out_of_range).unwrap_err();
            assert!(
                refusal.contains("from -9223372036854775808 to 4294967295"),
                "{refusal}"
            );
        }
        let page = |text: &str| PageNumber::try_from(text.to_owned()).unwrap().0;
        assert_eq!((page("0"), page("-3"), page("3")), (1, 1, 3));
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
