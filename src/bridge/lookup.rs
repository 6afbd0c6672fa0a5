//! What bk-ci's bodies need beyond the message (bkci-dropin §6): the build record, the pipeline's
//! row and the project's name, from bk-ci's service APIs through its gateway, and deleted
//! pipelines from its process database.
//!
//! Each answer is shared: messages that arrive together for one build wait for one lookup. An
//! answer is reused only by messages received before that lookup began, so no message gets
//! a record older than itself (a BUILD_END never shows the RUNNING status of an earlier read).

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tokio::sync::OnceCell;

use super::body::BuildRecord;
use super::message::{BuildRef, PipelineRef};
use crate::config::BridgeConfig;
use crate::import::bkci;
use crate::telemetry::names;

/// Why a lookup gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{lookup}: {reason}")]
pub struct LookupError {
    pub lookup: &'static str,
    pub reason: String,
}

/// A pipeline's row, as `PipelineEvent` uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRow {
    pub name: String,
    pub last_modify_user: String,
    pub update_time: i64,
}

/// bk-ci's answers, shared between the messages that need them at the same time.
pub struct Lookups {
    client: reqwest::Client,
    base: url::Url,
    user: String,
    mysql: Option<MySqlPool>,
    records: Shared<BuildRef, Arc<BuildRecord>>,
    pipelines: Shared<PipelineRef, Option<PipelineRow>>,
    projects: Shared<String, Option<String>>,
}

impl Lookups {
    /// Fails on a `BKCI_MYSQL_URL` that is not a MySQL URL (the error's `lookup` names the
    /// setting); nothing is contacted yet.
    pub fn new(config: &BridgeConfig) -> Result<Self, LookupError> {
        let client = reqwest::Client::builder()
            .timeout(config.lookup_timeout)
            .build()
            .map_err(|e| LookupError {
                lookup: "BKCI_SERVICE_URL",
                reason: format!("no HTTP client for bk-ci's services: {e}"),
            })?;
        let mysql = config
            .mysql_url
            .as_ref()
            .map(|url| {
                MySqlPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(config.lookup_timeout)
                    .connect_lazy(url.expose())
            })
            .transpose()
            .map_err(|e| LookupError {
                lookup: "BKCI_MYSQL_URL",
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            base: config.service_url.clone(),
            user: config.service_user.clone(),
            mysql,
            records: Shared::new(),
            pipelines: Shared::new(),
            projects: Shared::new(),
        })
    }

    /// The build's record (`ServiceBuildResource.getBuildRecordByExecuteCount`), read as the
    /// service user, who needs VIEW on the pipeline.
    pub async fn build_record(
        &self,
        build: &BuildRef,
        since: Instant,
    ) -> Result<Arc<BuildRecord>, LookupError> {
        let fetch = async {
            let mut url = self.endpoint(&[
                "ms",
                "process",
                "api",
                "service",
                "builds",
                "projects",
                &build.project,
                "pipelines",
                &build.pipeline,
                "builds",
                &build.build,
                "record",
            ]);
            url.query_pairs_mut().append_pair("channelCode", "BS");
            if let Some(count) = build.execute_count {
                url.query_pairs_mut()
                    .append_pair("executeCount", &count.to_string());
            }
            let record: Option<BuildRecord> = self.get("build_record", url).await?;
            record.map(Arc::new).ok_or_else(|| LookupError {
                lookup: "build_record",
                reason: format!("bk-ci has no record of build {}", build.build),
            })
        };
        self.records.get(build.clone(), since, fetch).await
    }

    /// The pipeline's row. A deleted pipeline is read from bk-ci's database (no service API
    /// answers for one); another from `getPipelineInfo`, and, when that has none and the
    /// database is configured, from the database, which still holds soft-deleted rows.
    pub async fn pipeline(
        &self,
        pipeline: &PipelineRef,
        since: Instant,
    ) -> Result<Option<PipelineRow>, LookupError> {
        let fetch = async {
            if !pipeline.deleted {
                let info = self.pipeline_info(pipeline).await?;
                if info.is_some() || self.mysql.is_none() {
                    return Ok(info);
                }
            }
            self.pipeline_row(pipeline).await
        };
        self.pipelines.get(pipeline.clone(), since, fetch).await
    }

    /// The project's current name, from the project service.
    pub async fn project_name(
        &self,
        english_name: &str,
        since: Instant,
    ) -> Result<Option<String>, LookupError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Project {
            project_name: Option<String>,
        }
        let fetch = async {
            let url = self.endpoint(&["ms", "project", "api", "service", "projects", english_name]);
            let project: Option<Project> = self.get("project", url).await?;
            Ok(project.and_then(|p| p.project_name))
        };
        self.projects
            .get(english_name.to_owned(), since, fetch)
            .await
    }

    async fn pipeline_info(
        &self,
        pipeline: &PipelineRef,
    ) -> Result<Option<PipelineRow>, LookupError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct PipelineInfo {
            pipeline_name: String,
            last_modify_user: String,
            update_time: i64,
        }
        let url = self.endpoint(&[
            "ms",
            "process",
            "api",
            "service",
            "pipelines",
            &pipeline.project,
            &pipeline.pipeline,
            "getPipelineInfo",
        ]);
        let info: Option<PipelineInfo> = self.get("pipeline_info", url).await?;
        Ok(info.map(|info| PipelineRow {
            name: info.pipeline_name,
            last_modify_user: info.last_modify_user,
            update_time: info.update_time,
        }))
    }

    async fn pipeline_row(
        &self,
        pipeline: &PipelineRef,
    ) -> Result<Option<PipelineRow>, LookupError> {
        const LOOKUP: &str = "pipeline_row";
        let Some(pool) = &self.mysql else {
            return Err(LookupError {
                lookup: LOOKUP,
                reason: "a deleted pipeline is read from bk-ci's database, and BKCI_MYSQL_URL \
                         is not set"
                    .to_owned(),
            });
        };
        let started = Instant::now();
        let row = bkci::pipeline_row(pool, &pipeline.project, &pipeline.pipeline).await;
        observe(LOOKUP, started, row.is_ok());
        let row = row.map_err(|e| LookupError {
            lookup: LOOKUP,
            reason: e.to_string(),
        })?;
        Ok(row.map(|row| PipelineRow {
            name: row.name,
            last_modify_user: row.last_modify_user,
            update_time: row.update_time,
        }))
    }

    /// `{base}/{segments…}`, each segment percent-encoded.
    fn endpoint(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        // The configured base is an http(s) URL with a host, so it always has path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// GETs a bk-ci `Result` envelope and answers its `data` (`None` when bk-ci left it out).
    async fn get<T: DeserializeOwned>(
        &self,
        lookup: &'static str,
        url: url::Url,
    ) -> Result<Option<T>, LookupError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            status: i64,
            message: Option<String>,
            data: Option<T>,
        }
        let failed = |reason: String| LookupError { lookup, reason };
        let started = Instant::now();
        let answer = async {
            let response = self
                .client
                .get(url)
                .header("X-DEVOPS-UID", &self.user)
                .send()
                .await
                .map_err(|e| failed(format!("bk-ci did not answer: {e}")))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|e| failed(format!("bk-ci's answer broke off: {e}")))?;
            let envelope: Envelope<T> = serde_json::from_str(&text).map_err(|e| {
                failed(format!(
                    "bk-ci answered HTTP {status} that is not its envelope: {e}"
                ))
            })?;
            if !status.is_success() || envelope.status != 0 {
                return Err(failed(format!(
                    "bk-ci answered HTTP {status}, status {}: {}",
                    envelope.status,
                    envelope.message.unwrap_or_default()
                )));
            }
            Ok(envelope.data)
        }
        .await;
        observe(lookup, started, answer.is_ok());
        answer
    }
}

fn observe(lookup: &'static str, started: Instant, ok: bool) {
    metrics::histogram!(names::BUS_LOOKUP_DURATION, "lookup" => lookup)
        .record(started.elapsed().as_secs_f64());
    if !ok {
        metrics::counter!(names::BUS_LOOKUP_ERRORS, "lookup" => lookup).increment(1);
    }
}

/// Answers shared between the callers that need them at the same time.
struct Shared<K, V> {
    cache: Cache<K, Arc<Flight<V>>>,
}

/// One lookup: when it began, and its answer once there is one.
struct Flight<V> {
    began: Instant,
    answer: OnceCell<Result<V, LookupError>>,
}

impl<K, V> Shared<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(10))
                .build(),
        }
    }

    /// The answer of a lookup that began at or after `since`, joining one under way or starting
    /// `fetch`.
    async fn get(
        &self,
        key: K,
        since: Instant,
        fetch: impl Future<Output = Result<V, LookupError>>,
    ) -> Result<V, LookupError> {
        let flight = self
            .cache
            .entry(key)
            .or_insert_with_if(
                async {
                    Arc::new(Flight {
                        began: Instant::now(),
                        answer: OnceCell::new(),
                    })
                },
                |flight| flight.began < since,
            )
            .await
            .into_value();
        flight.answer.get_or_init(|| fetch).await.clone()
    }
}
