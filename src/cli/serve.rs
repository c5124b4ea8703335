//! `tierlog serve`: the long-running owner of a data directory. Serves HTTP, tiers in the
//! background, and shuts down gracefully on SIGTERM/SIGINT: stop accepting, finish in-flight
//! requests (appends complete and are durable), end follow streams, flush, exit 0.
//!
//! Its start and stop lines go through `tracing` at target [`LIFECYCLE`] (level info, shown
//! unless `RUST_LOG` says otherwise for that target; see `crate::log_filter`), so `--log-format json`
//! writes them as JSON: `tierlog serving` with fields `data_dir` and `http` (the URL it
//! listens on; `replica_of` for a replica), `tierlog speaking Kafka` with `kafka` and
//! `advertised`, then `tierlog shutting down` and `tierlog stopped cleanly`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use clap::Args;
use tierlog::Log;
use tierlog::replica::Replica;
use tierlog::serve::http::{AppState, router};
use tierlog::tier::Tiering;
use tokio::signal::unix::{SignalKind, signal};

use super::GlobalArgs;
use crate::LIFECYCLE;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (default: server.listen, 127.0.0.1:7070).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also speak the Kafka protocol on this address (default: kafka.listen, off when empty;
    /// see docs/KAFKA.md).
    #[arg(long, value_name = "ADDR")]
    pub kafka_listen: Option<String>,
    /// Serve as a read-only replica of the bucket in [remote]: history and time lookups from
    /// the bucket alone, new tiered data within replica.refresh_ms, every write refused
    /// (HTTP 405, Kafka POLICY_VIOLATION); nothing is ever written to the bucket. --data-dir
    /// is the replica's own directory (new, empty, or an earlier replica's of this bucket).
    #[arg(long)]
    pub replica: bool,
}

pub fn run(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let mut config = global.load_config()?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let addr: SocketAddr = config.server.listen.parse().with_context(|| {
        format!("server.listen = {:?} is not an address such as 127.0.0.1:7070", config.server.listen)
    })?;
    if !addr.ip().is_loopback() && !config.server.allow_non_loopback && config.server.tokens.is_empty() {
        bail!(
            "refusing to listen on {addr} without authentication: use a loopback address, or set server.allow_non_loopback = true (TIERLOG_SERVER_ALLOW_NON_LOOPBACK=true) behind your own access control"
        );
    }
    if config.server.metrics_requires_token && config.server.tokens.is_empty() {
        bail!(
            "server.metrics_requires_token = true needs tokens: configure server.tokens with a token that has metrics = true (or admin), or set it false"
        );
    }
    if let Some(kafka) = args.kafka_listen {
        config.kafka.listen = kafka;
    }
    let kafka = config.kafka.listen_addr(&config.server)?;
    let runtime = tokio::runtime::Runtime::new()?;
    if args.replica {
        let data_dir = config.data_dir.clone();
        let replica = runtime
            .block_on(async {
                tierlog::replica::replica_url(&config)?; // before connecting makes the default bucket
                let remote = tierlog::tier::connect(&config).await?;
                Replica::open(config, remote).await
            })
            .with_context(|| format!("starting the replica in {}", data_dir.display()))?;
        runtime.block_on(serve(replica.log().clone(), addr, kafka, Background::Replica(replica)))?;
    } else {
        let log = Log::open(config)?;
        runtime.block_on(serve(log, addr, kafka, Background::Tiering))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What runs beside the front ends: the writer tiers, a replica follows the bucket.
enum Background {
    Tiering,
    Replica(Replica),
}

async fn serve(log: Log, addr: SocketAddr, kafka: Option<SocketAddr>, background: Background) -> Result<()> {
    let mut tiering_stats = None;
    let mut audit_trail = None;
    let (stop_refresh, refresh_stopped) = tokio::sync::watch::channel(false);
    let mut refresher = None;
    let mut replica_stats = None;
    let mut remote = None;
    let background = if let Background::Replica(replica) = background {
        replica_stats = Some(replica.stats.clone());
        refresher = Some(replica.spawn(refresh_stopped));
        None
    } else if log.config().tiering.enabled {
        match Tiering::start(log.clone()).await {
            Ok(tiering) => {
                tiering_stats = Some(tiering.stats.clone());
                remote = Some(tiering.remote().display.clone());
                audit_trail = Some(tiering.audit.clone());
                Some(Arc::new(tiering).spawn())
            }
            Err(e) => {
                tracing::error!(error = %e, "remote tier unavailable: serving the local log without tiering; fix the [remote] settings and restart");
                None
            }
        }
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    // Before anything announces that the server listens: a SIGTERM that follows the
    // announcement at once must shut down cleanly, not kill the process.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = AppState::new(log.clone(), stopped, tiering_stats)?;
    if let Some(stats) = replica_stats {
        let _ = state.replica.set(stats);
    }
    if let Some(trail) = audit_trail {
        let _ = state.audit.set(trail);
    }
    let kafka = match kafka {
        Some(kafka) => Some(start_kafka(kafka, state.clone()).await?),
        None => None,
    };
    let (data_dir, http) = (log.data_dir().display(), format!("http://{}", listener.local_addr()?));
    match log.replica_of() {
        Some(remote) => {
            tracing::info!(target: LIFECYCLE, replica_of = %remote, %data_dir, %http, "tierlog serving a read-only replica")
        }
        None => {
            let remote = remote.as_deref().unwrap_or("none (tiering off or unavailable)");
            tracing::info!(target: LIFECYCLE, %data_dir, %http, remote, "tierlog serving")
        }
    }
    let shutdown_state = state.clone();
    let limits = state.limits.clone();
    tierlog::serve::http::serve(listener, router(state), &limits, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(target: LIFECYCLE, "tierlog shutting down (finishing in-flight requests)");
        shutdown_state.ready.store(false, Ordering::Relaxed);
        let _ = stop.send(true);
    })
    .await;
    if let Some(kafka) = kafka {
        let _ = kafka.await; // stops accepting once shutdown starts
    }
    if let Some(background) = background {
        background.stop().await;
    }
    if let Some(refresher) = refresher {
        let _ = stop_refresh.send(true);
        let _ = refresher.await;
    }
    log.flush()?;
    tracing::info!(target: LIFECYCLE, "tierlog stopped cleanly");
    Ok(())
}

/// Binds the Kafka listener and serves it in the background until shutdown.
async fn start_kafka(addr: SocketAddr, state: Arc<AppState>) -> Result<tokio::task::JoinHandle<()>> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the Kafka listener on {addr}"))?;
    let broker = Arc::new(tierlog::kafka::Broker::new(state.clone(), &listener)?);
    let (kafka, advertised) =
        (listener.local_addr()?, format!("{}:{}", broker.advertised_host, broker.advertised_port));
    tracing::info!(target: LIFECYCLE, %kafka, %advertised, "tierlog speaking Kafka");
    Ok(tokio::spawn(tierlog::kafka::serve(listener, broker, state.shutdown_signal())))
}
