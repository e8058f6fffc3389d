//! Start-up checks and the agent's lifetime: load, attach, capture, export,
//! and a clean shutdown on SIGINT/SIGTERM.

use std::{
    io::{self, LineWriter},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use aya::maps::RingBuf;
use log::{info, warn};
use wirespan_common::{
    config::{
        FdTableOffsets, KernelConfig, PROPAGATE_HEADER, PROPAGATE_HEADER_CIDRS,
        PROPAGATE_TCP_OPTION, SockOffsets,
    },
    event::ThreadTrace,
    maps,
};

use crate::{
    btf::KernelBtf,
    capture,
    clock::BootClock,
    config::{Cli, PrintMode, Propagation},
    conn::ConnTable,
    export::{Exporter, JsonLines, otlp_exporter::OtlpExporter, text::TextLines},
    kernel_counters::KernelCounters,
    kernel_filter::KernelMaps,
    link::{Linker, ThreadTraceSink},
    loader,
    metrics::{self, Readiness},
    otel_env::{ExportSettings, Protocol},
    pipeline::{BatchConfig, MakeExporter, Output, Pipeline},
    probe::KernelFeatures,
    process,
    select::Selector,
    sockops,
    stats::Stats,
    tls::TlsAttacher,
};

/// Spans waiting for the printer at most; beyond it they are dropped and
/// counted, so a stalled stdout cannot grow memory.
const PRINT_QUEUE: usize = 16 * 1024;
/// The printer shows spans promptly, in batches of up to 512.
const PRINT_BATCH: BatchConfig = BatchConfig {
    max_batch: 512,
    delay: Duration::from_millis(100),
};
/// How long past the shutdown deadline we wait for outputs to finish (a
/// printer stuck on a full pipe, an export that ignores its deadline).
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// A problem with how the agent was started: reported in one line, exit 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(
        "wirespan needs root (or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH): run it with sudo"
    )]
    NotPrivileged,
    #[error("--pid {0}: no such process (see `ps`); give the pid of a running process")]
    NoSuchPid(u32),
    #[error("--pid: {0} pids given, at most {max} are supported; select by --exe-path instead", max = wirespan_common::maps::SELECTED_PIDS_ENTRIES)]
    TooManyPids(usize),
    #[error(transparent)]
    MetricsAddr(#[from] metrics::BindError),
}

/// Capability bits the agent needs, from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn preflight(cli: &Cli) -> Result<(), UsageError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        return Err(UsageError::NotPrivileged);
    }
    if cli.pids.len() > wirespan_common::maps::SELECTED_PIDS_ENTRIES as usize {
        return Err(UsageError::TooManyPids(cli.pids.len()));
    }
    for &pid in &cli.pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(UsageError::NoSuchPid(pid));
        }
    }
    Ok(())
}

fn offsets() -> (SockOffsets, FdTableOffsets) {
    let none = |e: &dyn std::fmt::Display, what: &str| {
        warn!("kernel BTF: {e}; lost: {what}");
    };
    let unknown_sock = SockOffsets::UNKNOWN;
    let unknown_fd = FdTableOffsets::UNKNOWN;
    let btf = match KernelBtf::from_sys() {
        Ok(b) => b,
        Err(e) => {
            none(
                &e,
                "connection addresses and ports (server.port, client.address, --open-ports)",
            );
            return (unknown_sock, unknown_fd);
        }
    };
    let sock = btf.sock_offsets().unwrap_or_else(|e| {
        none(
            &e,
            "connection addresses and ports (server.port, client.address, --open-ports)",
        );
        unknown_sock
    });
    let fd = btf.fdtable_offsets().unwrap_or(unknown_fd);
    (sock, fd)
}

/// The outputs: the printer (`--print`; by default text, or off when
/// OTLP is configured) and the OTLP exporter when an endpoint is set. Each
/// gets every span, through its own queue.
fn exporter(cli: &Cli, export: &ExportSettings, stats: &Arc<Stats>) -> Vec<Output> {
    let mut outputs = Vec::new();
    let st = stats.clone();
    let printer: Option<MakeExporter> = match cli.print_mode(export.otlp.is_some()) {
        PrintMode::Text => Some(Box::new(move |_| {
            Ok(Box::new(TextLines::new(LineWriter::new(io::stdout()), st)) as Box<dyn Exporter>)
        })),
        PrintMode::Json => Some(Box::new(move |_| {
            Ok(Box::new(JsonLines::new(LineWriter::new(io::stdout()), st)) as Box<dyn Exporter>)
        })),
        PrintMode::Off => None,
    };
    if let Some(make) = printer {
        outputs.push(Output {
            name: "print",
            queue: PRINT_QUEUE,
            batch: PRINT_BATCH,
            dropped: |s| &s.spans_dropped_print_queue_full,
            make,
        });
    }
    if let Some(otlp) = export.otlp.clone() {
        let (bsp, st) = (export.bsp, stats.clone());
        info!(
            "exporting spans over OTLP/{} to {}",
            match otlp.protocol {
                Protocol::Grpc => "gRPC",
                Protocol::HttpProtobuf => "HTTP",
            },
            otlp.endpoint
        );
        outputs.push(Output {
            name: "otlp",
            queue: bsp.max_queue_size,
            batch: BatchConfig {
                max_batch: bsp.max_export_batch_size,
                delay: bsp.schedule_delay,
            },
            dropped: |s| &s.spans_dropped_queue_full,
            make: Box::new(move |deadline| {
                Ok(Box::new(OtlpExporter::new(&otlp, &bsp, st, deadline)?) as Box<dyn Exporter>)
            }),
        });
    }
    outputs
}

pub async fn run(cli: Cli, export: ExportSettings) -> anyhow::Result<()> {
    // First, so that a taken port fails fast, before anything is loaded.
    let metrics_listener = cli
        .metrics_addr
        .map(metrics::bind)
        .transpose()
        .map_err(UsageError::from)?;
    loader::ensure_tracefs()?;
    let features = KernelFeatures::probe();
    info!("{features}");
    features.check_minimum()?;
    let (sock, fdtable) = offsets();
    // The parsed kernel BTF is gone: give its pages back now, before the
    // loader parses BTF again and maps the ring buffer, so that the RSS
    // while the verifier runs (seconds) holds one parse, not both plus the
    // ring. (The start-up peak, ~49 MiB, is that first parse itself.)
    crate::memory::release_startup_heap();
    let classifier = loader::choose_classifier(cli.socket_classifier, &fdtable)?;
    let (cgroup, propagation) = propagation_plan(&cli, &sock)?;
    let kcfg = KernelConfig {
        agent_tgid: std::process::id(),
        capture_bytes: cli.capture_bytes,
        pid_filter: u32::from(!cli.pids.is_empty()),
        head_capture_bytes: cli.capture_head_bytes.max(cli.capture_bytes),
        sock,
        fdtable,
        classifier: classifier as u32,
        propagation,
        untraced_filter: u32::from(cli.exe_path.is_some()),
        _pad: 0,
    };
    let mut ebpf = loader::load(&kcfg, &cli.pids, cli.ring_buffer_bytes)?;
    crate::memory::release_startup_heap();
    if let (Some(ports), Some(dir)) = (&cli.inject_traceparent, &cgroup) {
        // Before sock_ops: connections established from then on are added.
        sockops::attach_injection(&mut ebpf, ports, cli.inject_cidrs.as_ref())
            .context("--inject-traceparent: cannot set up header injection")?;
        let nets = cli
            .inject_cidrs
            .as_ref()
            .map_or_else(String::new, |c| format!(" in {c}"));
        info!(
            "trace context: traceparent injected into requests to ports {ports}{nets} from processes in {}",
            dir.display()
        );
    }
    if let Some(dir) = &cgroup {
        match sockops::attach(&mut ebpf, dir) {
            Ok(()) if propagation & PROPAGATE_TCP_OPTION != 0 => info!(
                "trace context: TCP option on connections of processes in {}",
                dir.display()
            ),
            Ok(()) => {}
            // Injection needs sock_ops to choose its connections.
            Err(e) if cli.inject_traceparent.is_some() => {
                return Err(e.context("--inject-traceparent: cannot attach sock_ops"));
            }
            Err(e) => {
                warn!("trace context TCP option unavailable ({e:#}); lost: linking across nodes")
            }
        }
    }
    let linker =
        thread_trace_sink(&mut ebpf).map_or_else(Linker::default, Linker::with_thread_trace);
    let ring = RingBuf::try_from(ebpf.take_map(maps::EVENTS).context("map EVENTS missing")?)?;
    // Read by scrapes while capture runs and for the exit line, while the
    // TLS attacher owns the rest of the object.
    let kernel_counters = Arc::new(KernelCounters::take(&mut ebpf)?);
    let kernel_filter = KernelMaps::take(&mut ebpf, kcfg.untraced_filter != 0)?;
    let mut tls = TlsAttacher::new(&cli.pids);
    tls.load(&mut ebpf);
    tls.scan_all(&mut ebpf);

    let stats = Arc::new(Stats::default());
    let readiness = Arc::new(Readiness::default());
    if let Some(listener) = metrics_listener {
        metrics::spawn(
            listener,
            metrics::Sources {
                stats: stats.clone(),
                kernel: kernel_counters.clone(),
                readiness: readiness.clone(),
            },
        )?;
    }
    let selector = Selector {
        pids: cli.pids.clone(),
        exe_path: cli.exe_path.clone(),
        open_ports: cli.open_ports.clone(),
    };
    let table = ConnTable::with_linker(
        selector,
        BootClock::measure(),
        cli.max_connections as usize,
        stats.clone(),
        linker,
    )
    .with_kernel_filter(Box::new(kernel_filter))
    .with_skip_bodies_from(cli.skip_bodies_from);

    process::set_agent_resource_attributes(export.resource_attributes.clone());
    let (tx, pipeline) = Pipeline::start(exporter(&cli, &export, &stats), stats.clone())
        .context("starting the span outputs")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (exec_tx, exec_rx) = tokio::sync::mpsc::channel(EXEC_QUEUE);
    let attacher = tokio::spawn(tls_attacher(ebpf, tls, exec_rx, stop_rx.clone()));
    let capture = tokio::spawn(capture::run(
        ring,
        table,
        tx,
        stats.clone(),
        exec_tx,
        stop_rx,
    ));
    // Before "ready": whoever waits for it may signal at once, and until
    // the handlers are installed a signal kills the agent unflushed.
    let mut signals = Signals::install()?;
    crate::memory::release_startup_heap();
    readiness.set_ready();
    eprintln!("wirespan: ready (tracing {})", describe_scope(&cli));

    signals.recv().await;
    readiness.set_stopping();
    info!("stopping");
    let deadline = Instant::now() + export.shutdown_timeout;
    pipeline.begin_shutdown(deadline);
    let _ = stop_tx.send(true);
    capture.await.context("capture task panicked")??;
    // Capture is over: read the kernel's counters, then detach. Detaching
    // takes about 2 s on 6.18 (an RCU wait per tracepoint link), so it runs
    // while the outputs flush instead of after them.
    let (ebpf, tls) = attacher.await.context("TLS attacher panicked")?;
    let mut kernel = kernel_counters.read();
    kernel.push(("tls_files_probed", tls.files_attached));
    kernel.push(("tls_unsupported_executables", tls.unsupported_executables));
    let detach = tokio::task::spawn_blocking(move || loader::detach_all(ebpf));
    // The capture task dropped the span sender: the outputs drain and end,
    // exporting what they can by the deadline and counting the rest. A
    // second signal stops the wait.
    let flushed = tokio::task::spawn_blocking(move || pipeline.join(deadline + JOIN_GRACE));
    tokio::select! {
        r = flushed => if !r.unwrap_or(false) {
            warn!("span outputs did not finish by the shutdown deadline; exiting anyway");
        },
        _ = signals.recv() => warn!("second signal: exiting without waiting for the flush"),
    }
    if detach.await.is_err() {
        warn!("detaching the eBPF programs panicked");
    }
    print_counters(&stats, &kernel);
    Ok(())
}

/// The cgroup for TCP option propagation, or None when it is off (by
/// `--propagation none`, or because this kernel cannot do it: that is
/// said once, with what is lost).
fn propagation_plan(cli: &Cli, sock: &SockOffsets) -> anyhow::Result<(Option<PathBuf>, u32)> {
    let mut bits = 0;
    if cli.propagation == Propagation::TcpOption {
        bits |= PROPAGATE_TCP_OPTION;
    }
    let inject = cli.inject_traceparent.is_some();
    if inject {
        bits |= PROPAGATE_HEADER;
        if cli.inject_cidrs.is_some() {
            bits |= PROPAGATE_HEADER_CIDRS;
        }
    }
    if bits == 0 {
        return Ok((None, 0));
    }
    // Asked for by name, injection fails loudly; the default TCP option
    // only warns (the agent is useful without it).
    let lost = |e: &dyn std::fmt::Display| -> anyhow::Result<(Option<PathBuf>, u32)> {
        if inject {
            anyhow::bail!("--inject-traceparent: {e}");
        }
        warn!("trace context TCP option unavailable ({e}); lost: linking across nodes");
        Ok((None, 0))
    };
    if sock.skc_cookie == u32::MAX {
        return lost(&"kernel BTF lacks sock_common.skc_cookie");
    }
    match sockops::choose_cgroup(cli.cgroup.as_deref()) {
        Ok(dir) => Ok((Some(dir), bits)),
        Err(e) if cli.cgroup.is_some() => Err(e),
        Err(e) => lost(&format!("{e:#}")),
    }
}

/// Lets the linker correct a thread's trace in the kernel (see
/// `link::ThreadTraceSink`). Failures only cost that correction.
fn thread_trace_sink(ebpf: &mut aya::Ebpf) -> Option<ThreadTraceSink> {
    let map = ebpf.take_map(maps::THREAD_TRACE)?;
    let mut map: aya::maps::HashMap<_, u64, ThreadTrace> =
        aya::maps::HashMap::try_from(map).ok()?;
    Some(Box::new(move |key: u64, trace_id: [u8; 16]| {
        // Only a thread still serving: once it answered its requests its
        // entry is idle (in_flight 0; the kernel keeps it for the thread's
        // next request), and a late correction must not touch it.
        if let Ok(mut t) = map.get(&key, 0)
            && t.in_flight != 0
        {
            t.trace_id = trace_id;
            // BPF_EXIST (2): update only, never create.
            let _ = map.insert(key, t, 2);
        }
    }))
}

/// Exec'd processes waiting to be inspected for OpenSSL at most.
const EXEC_QUEUE: usize = 1024;

/// Owns the eBPF object while capture runs, attaching TLS uprobes to the
/// OpenSSL of processes as they start. A process maps its libssl only after
/// exec, once its dynamic loader ran, so each is looked at again shortly
/// after. Returns the object at stop, for the counters and the detach.
async fn tls_attacher(
    mut ebpf: aya::Ebpf,
    mut tls: TlsAttacher,
    mut execs: tokio::sync::mpsc::Receiver<u32>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (aya::Ebpf, TlsAttacher) {
    let (later_tx, mut later) = tokio::sync::mpsc::channel::<u32>(EXEC_QUEUE);
    loop {
        tokio::select! {
            Some(pid) = execs.recv() => {
                tls.scan_process(&mut ebpf, pid);
                let tx = later_tx.clone();
                tokio::spawn(async move {
                    for delay_ms in [50, 500] {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        if tx.send(pid).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Some(pid) = later.recv() => tls.scan_process(&mut ebpf, pid),
            _ = stop.changed() => break,
        }
    }
    (ebpf, tls)
}

fn describe_scope(cli: &Cli) -> String {
    let mut parts = Vec::new();
    if !cli.pids.is_empty() {
        parts.push(format!("pids {:?}", cli.pids));
    }
    if let Some(g) = &cli.exe_path {
        parts.push(format!("exe {g}"));
    }
    if cli.open_ports.is_some() {
        parts.push("selected ports".to_string());
    }
    if parts.is_empty() {
        "every process".to_string()
    } else {
        parts.join(", ")
    }
}

/// SIGINT and SIGTERM, caught from [`Signals::install`] on.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    /// The next SIGINT or SIGTERM (one that came since `install` counts).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

fn print_counters(stats: &Stats, kernel: &[(&'static str, u64)]) {
    let mut obj = serde_json::Map::new();
    for (k, v) in kernel.iter().copied().chain(stats.snapshot()) {
        obj.insert(k.to_string(), v.into());
    }
    eprintln!("wirespan: counters {}", serde_json::Value::Object(obj));
}
