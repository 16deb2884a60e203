//! `portent ask "what's happening in production?"`: asks a running `portent serve`.
//!
//! ```text
//! portent ask "what's happening in shop?" --url http://portent.monitoring:9099
//! ```
//!
//! The daemon answers from what it sees now (`GET /api/v1/ask`): the open incidents, worst
//! first (those the question names, when it names a namespace, service, pod or node), with
//! their most likely cause, and the highest scores. The answer is deterministic; nothing the
//! question says is executed.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Arguments of `portent ask`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The question, in plain words.
    pub(crate) question: String,
    /// The daemon's address (its `server.listen`).
    #[arg(long, default_value = "http://127.0.0.1:9099")]
    pub(crate) url: String,
}

/// Runs `portent ask`.
pub(crate) fn run(args: &Args) -> Result<()> {
    let mut url = reqwest::Url::parse(&args.url).with_context(|| {
        format!(
            "--url {:?}: not a URL (e.g. http://127.0.0.1:9099)",
            args.url
        )
    })?;
    url.set_path("/api/v1/ask");
    url.query_pairs_mut().append_pair("q", &args.question);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let body: serde_json::Value = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let resp = client.get(url.clone()).send().await.with_context(|| {
            format!(
                "asking portent at {}: is `portent serve` running there? (set --url)",
                args.url
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        if !status.is_success() {
            bail!("portent answered {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("not portent's answer: {text}"))
    })?;
    match body["answer"].as_str() {
        Some(answer) => {
            println!("{}", answer.trim_end());
            Ok(())
        }
        None => bail!("not portent's answer: {body}"),
    }
}
