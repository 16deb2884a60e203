//! The `remote_write` outputs of `serve`: each tick's new verdicts, as the four output series
//! of each ([`ScoreKey::output_series`]), sent to every remote_write output of their model.
//!
//! Sending is off the scoring path: the step only appends to a bounded queue per output
//! ([`QUEUE_SAMPLES`] samples); a task per output drains it in requests of at most
//! [`BATCH_SAMPLES`] samples, retrying as the output's `retries` say. When the queue is full
//! (the endpoint is down or slower than scoring), the oldest samples are dropped and counted
//! in `portent_remote_write_samples_dropped_total{output}`: a dashboard would rather see the
//! latest scores than an old backlog. A batch that fails after its retries is counted in
//! `portent_remote_write_samples_failed_total{output}` and not retried again.
//!
//! Outputs are built at start; a reload that changes them is logged and needs a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use portent_config::{Config, Output};
use portent_core::Series;
use portent_engine::StepScore;
use portent_prom::RemoteWriteClient;
use portent_server::{ScoreKey, SelfMetrics};
use tokio::sync::{Notify, watch};

use crate::pull::client_config;
use crate::serve::lock;

/// Samples (four per verdict) waiting to be sent, per output, at most: 25,000 verdicts, a few
/// MiB with their labels.
pub(crate) const QUEUE_SAMPLES: usize = 100_000;

/// Samples per request: what Prometheus 3 sends at most.
pub(crate) const BATCH_SAMPLES: usize = RemoteWriteClient::DEFAULT_MAX_SAMPLES_PER_REQUEST;

struct Queue {
    alias: String,
    series: Mutex<VecDeque<Series>>,
    ready: Notify,
}

/// Every remote_write output of a config and which models write to each.
pub(crate) struct RemoteWriteOutputs {
    queues: Vec<Arc<Queue>>,
    /// Model alias → indices into `queues`.
    by_model: HashMap<String, Vec<usize>>,
    metrics: SelfMetrics,
}

impl RemoteWriteOutputs {
    /// The outputs of `config`, their senders spawned on the current runtime until `stop`.
    pub(crate) fn start(
        config: &Config,
        metrics: &SelfMetrics,
        stop: &watch::Receiver<bool>,
    ) -> Result<Self> {
        let mut queues = Vec::new();
        let mut index = HashMap::new();
        for (alias, output) in &config.outputs {
            let Output::RemoteWrite(endpoint) = output else {
                continue;
            };
            let client = RemoteWriteClient::new(&client_config(endpoint))
                .with_context(|| format!("outputs.{alias}"))?
                .with_max_samples_per_request(BATCH_SAMPLES)
                .with_context(|| format!("outputs.{alias}"))?;
            let queue = Arc::new(Queue {
                alias: alias.to_string(),
                series: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
            });
            metrics.init_remote_write(alias.as_str());
            tokio::spawn(send_loop(
                Arc::clone(&queue),
                client,
                metrics.clone(),
                stop.clone(),
            ));
            index.insert(alias.to_string(), queues.len());
            queues.push(queue);
        }
        let by_model = config
            .models
            .iter()
            .map(|(m, model)| {
                let outs = model
                    .outputs
                    .iter()
                    .filter_map(|o| index.get(o.as_str()).copied())
                    .collect::<Vec<_>>();
                (m.to_string(), outs)
            })
            .filter(|(_, outs)| !outs.is_empty())
            .collect();
        Ok(Self {
            queues,
            by_model,
            metrics: metrics.clone(),
        })
    }

    /// Queues the output series of `scores` for their models' outputs.
    pub(crate) fn enqueue(&self, scores: &[StepScore]) {
        let mut per_queue: Vec<Vec<Series>> = vec![Vec::new(); self.queues.len()];
        for s in scores {
            let Some(outs) = self.by_model.get(&*s.model) else {
                continue;
            };
            let key = ScoreKey::new(Arc::clone(&s.query), Arc::clone(&s.model), s.labels.clone());
            let series: Vec<Series> = key.output_series(&s.scored).collect();
            for &o in outs {
                per_queue[o].extend(series.iter().cloned());
            }
        }
        for (queue, new) in self.queues.iter().zip(per_queue) {
            if new.is_empty() {
                continue;
            }
            let dropped = {
                let mut q = lock(&queue.series);
                q.extend(new);
                let over = q.len().saturating_sub(QUEUE_SAMPLES);
                q.drain(..over);
                over
            };
            if dropped > 0 {
                self.metrics
                    .add_remote_write_dropped(&queue.alias, u64::try_from(dropped).unwrap_or(0));
            }
            queue.ready.notify_one();
        }
    }
}

async fn send_loop(
    queue: Arc<Queue>,
    client: RemoteWriteClient,
    metrics: SelfMetrics,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let batch: Vec<Series> = {
            let mut q = lock(&queue.series);
            let n = q.len().min(BATCH_SAMPLES);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = queue.ready.notified() => continue,
            }
        }
        let n: u64 = batch
            .iter()
            .map(|s| u64::try_from(s.samples.len()).unwrap_or(0))
            .sum();
        match client.write(&batch).await {
            Ok(()) => metrics.add_remote_write_sent(&queue.alias, n),
            Err(e) => {
                metrics.add_remote_write_failed(&queue.alias, n);
                eprintln!(
                    "portent: outputs.{}: {n} samples not sent: {e}",
                    queue.alias
                );
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}
