//! Write coalescing for registrations: concurrent creates are gathered into one multi-row upsert,
//! so a burst of N requests costs one statement and one commit instead of N. Under light load a
//! batch holds one item and nothing waits. The writes run in their own task, so a client that
//! disconnects cannot cancel one halfway. A row the database refuses fails alone: the others of
//! its batch are written again one by one (see `write`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::NewCallback;
use crate::store::{CallbackStore, StoreError};

/// Most registrations written in one statement.
const MAX_BATCH: usize = 256;

type Outcome = Result<(), StoreError>;
type Reply = oneshot::Sender<Outcome>;

#[derive(Clone)]
pub struct CallbackWriter {
    queue: mpsc::Sender<(NewCallback, Reply)>,
}

impl CallbackWriter {
    /// Starts the writing task; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn CallbackStore>) -> Self {
        let (queue, pending) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, pending));
        Self { queue }
    }

    /// Upserts one callback; resolves once its batch is committed.
    pub async fn upsert(&self, callback: NewCallback) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((callback, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.unwrap_or(Err(StoreError::WriterStopped))
    }
}

async fn write_batches(
    store: Arc<dyn CallbackStore>,
    mut pending: mpsc::Receiver<(NewCallback, Reply)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // One statement may not touch a row twice: of repeated keys the last one wins, and
        // every request is answered with the outcome of its key's row.
        let mut last_of_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (index, (callback, _)) in batch.iter().enumerate() {
            last_of_key.insert(key(callback), index);
        }
        let row_of: Vec<usize> = batch
            .iter()
            .map(|(callback, _)| last_of_key[&key(callback)])
            .collect();
        let mut rows: Vec<usize> = last_of_key.into_values().collect();
        rows.sort_unstable();
        let outcomes = write(&store, &batch, &rows).await;
        for ((_, reply), row) in batch.drain(..).zip(row_of) {
            let _ = reply.send(outcomes[&row].clone());
        }
    }
}

/// What makes a registration one row: (project, url, event).
fn key(callback: &NewCallback) -> (&str, &str, &str) {
    (
        callback.project_id.as_str(),
        callback.url.as_str(),
        callback.event.as_str(),
    )
}

/// Writes the rows at `rows` of the batch in one statement. When the database refuses the
/// statement for a reason other than being unavailable, one row may be to blame: each row is
/// then written alone, so every other row still commits and the bad one gets its own error.
async fn write(
    store: &Arc<dyn CallbackStore>,
    batch: &[(NewCallback, Reply)],
    rows: &[usize],
) -> HashMap<usize, Outcome> {
    let callbacks: Vec<NewCallback> = rows.iter().map(|&i| batch[i].0.clone()).collect();
    let shared = match store.upsert_callbacks(&callbacks).await {
        Err(error) if rows.len() > 1 && !error.is_unavailable() => {
            tracing::warn!(%error, rows = rows.len(), "a coalesced create failed; writing its rows one by one");
            let mut outcomes = HashMap::with_capacity(rows.len());
            for (&row, callback) in rows.iter().zip(callbacks) {
                let outcome = store.upsert_callbacks(&[callback]).await;
                outcomes.insert(row, outcome);
            }
            return outcomes;
        }
        result => result,
    };
    rows.iter().map(|&row| (row, shared.clone())).collect()
}
