//! Write coalescing for registrations: concurrent creates are gathered into one multi-row upsert,
//! so a burst of N requests costs one statement and one commit instead of N. Under light load a
//! batch holds one item and nothing waits. The writes run in their own task, so a client that
//! disconnects cannot cancel one halfway.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::NewCallback;
use crate::store::Store;

/// Most registrations written in one statement.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<(), Arc<sqlx::Error>>>;

#[derive(Clone)]
pub struct CallbackWriter {
    queue: mpsc::Sender<(NewCallback, Reply)>,
}

impl CallbackWriter {
    /// Starts the writing task; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (queue, pending) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, pending));
        Self { queue }
    }

    /// Upserts one callback; resolves once its batch is committed.
    pub async fn upsert(&self, callback: NewCallback) -> Result<(), Arc<sqlx::Error>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((callback, reply))
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?;
        answer
            .await
            .unwrap_or(Err(Arc::new(sqlx::Error::PoolClosed)))
    }
}

async fn write_batches(store: Arc<dyn Store>, mut pending: mpsc::Receiver<(NewCallback, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // One statement may not touch a row twice: of repeated keys the last one wins, and
        // every request is answered with the statement's outcome.
        let mut last_of_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (index, (callback, _)) in batch.iter().enumerate() {
            let key = (
                callback.project_id.as_str(),
                callback.url.as_str(),
                callback.event.as_str(),
            );
            last_of_key.insert(key, index);
        }
        let mut indexes: Vec<usize> = last_of_key.into_values().collect();
        indexes.sort_unstable();
        let rows: Vec<NewCallback> = indexes.iter().map(|&i| batch[i].0.clone()).collect();
        let outcome = store.upsert_callbacks(&rows).await.map_err(Arc::new);
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(outcome.clone());
        }
    }
}
