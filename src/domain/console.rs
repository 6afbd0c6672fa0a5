//! What the operators' console reads besides what the API reads: callbacks of every level
//! together, projects, and the recent outcomes of attempts.

use super::{Callback, CallbackEvent, CallbackName, EpochMillis, PipelineId, ProjectId};

/// A registration of any level: project-level, global (`DEVOPS_ALL_PROJECT`) or pipeline-level.
#[derive(Debug, Clone)]
pub struct RegisteredCallback {
    pub callback: Callback,
    /// The pipeline and name of a pipeline-level callback.
    pub pipeline: Option<(PipelineId, CallbackName)>,
}

/// A project (or the global scope) that has callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSummary {
    pub project_id: ProjectId,
    pub callbacks: u64,
    pub disabled: u64,
}

/// Which callbacks a console search finds: those of `project` (all projects when `None`) whose
/// URL contains `text` (ASCII case ignored) or whose event is `text`.
#[derive(Debug, Clone, Default)]
pub struct CallbackSearch {
    pub project: Option<ProjectId>,
    pub text: Option<String>,
}

impl CallbackSearch {
    /// The event `text` names, if it names one (`build_end` is `BUILD_END`).
    pub fn event(&self) -> Option<CallbackEvent> {
        self.text
            .as_deref()
            .and_then(|text| text.trim().to_ascii_uppercase().parse().ok())
    }

    /// `text` as a `LIKE … ESCAPE '\'` pattern matching URLs that contain it, lower-cased.
    pub fn url_pattern(&self) -> Option<String> {
        let text = self.text.as_deref()?.trim().to_ascii_lowercase();
        let mut pattern = String::with_capacity(text.len() + 2);
        pattern.push('%');
        for c in text.chars() {
            if matches!(c, '\\' | '%' | '_') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Some(pattern)
    }
}

/// Attempts recorded in one slice of time, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptBucket {
    /// Where the slice starts, epoch ms.
    pub start: EpochMillis,
    pub succeeded: u64,
    pub failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(text: &str) -> CallbackSearch {
        CallbackSearch {
            project: None,
            text: Some(text.to_owned()),
        }
    }

    #[test]
    fn url_patterns_escape_like_wildcards() {
        assert_eq!(
            search(" Hook_1%\\ ").url_pattern().as_deref(),
            Some("%hook\\_1\\%\\\\%")
        );
        assert_eq!(CallbackSearch::default().url_pattern(), None);
    }

    #[test]
    fn an_event_name_in_any_case_is_an_event() {
        assert_eq!(search("build_end").event(), Some(CallbackEvent::BuildEnd));
        assert_eq!(search("example.com").event(), None);
    }
}
