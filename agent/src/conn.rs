//! The connection table: the one place that knows both fds and streams.
//! Kernel events come in, keyed by (tgid, fd); HTTP/1 exchanges go to the
//! parser of that connection; finished exchanges come out as spans.

use std::{collections::HashSet, sync::Arc};

use wirespan_common::{
    event::{
        Direction, EventHeader, EventKind, FLAG_SEQ, FLAG_TLS,
        user::{DataPart, Event, KernelContext},
    },
    maps::SocketEntry,
};

use crate::{
    clock::{BootClock, monotonic_now_ns},
    inthash::IntMap,
    kernel_filter::{KernelFilter, Mute, Told},
    link::{Linker, ReqCtx},
    process::{ProcessCache, ProcessInfo},
    protocol::http1::{Exchange, Http1Conn, Http1Counters, Limits, Role},
    select::Selector,
    span::context::parse_inbound,
    span::{
        Span,
        assemble::{Endpoints, Scratch, span_from_exchange},
    },
    stats::{Stats, add},
};

mod started;

use started::Started;

type Key = (u32, i32);

/// Connections remembered between their accept/connect and their first
/// bytes at most.
const MAX_BEGAN: usize = 65536;

/// A connection seen to begin whose first this many socket syscalls carry
/// no HTTP/1 start line is not HTTP: the kernel is told to stop sending its
/// payload. Not fewer: HTTP may follow a prelude of a few messages (a PROXY
/// protocol header, a SOCKS5 handshake with authentication: six), and a
/// connection attached mid-stream is never judged this way (its first
/// bytes may be the middle of a body).
const NOT_HTTP_AFTER: u8 = 8;

/// The default `--skip-bodies-from`: a Content-Length body with at least
/// this much left after an event has its middle sent as lengths only (see
/// `skip_body`). Telling the kernel costs the agent a bpf syscall: worth it
/// when several syscalls' payloads then stay in the kernel.
pub const DEFAULT_SKIP_BODIES_FROM: u64 = 64 * 1024;
/// The most of a body skipped at once: the kernel compares stream
/// positions as signed 32-bit distances. A longer body sends the bytes
/// past this (its next events then skip the rest).
const SKIP_BODY_MAX: u64 = 1 << 30;

/// One connection's state. The table holds it boxed: the table's slots
/// (a power of two, at most 7/8 full) then cost a pointer each rather than
/// a whole `Conn`, and a table that grew for a burst of connections keeps
/// only the pointers.
struct Conn {
    sk: u64,
    ends: Endpoints,
    http: Http1Conn,
    last_ts: u64,
    process: Arc<ProcessInfo>,
    /// Span identity of each request in flight, by the parser's sequence
    /// number, with the thread that read or wrote it.
    ctxs: Started,
    /// Identity decided for the next client request at the kernel's
    /// RequestIntent, with the writing thread.
    intent: Option<(ReqCtx, u32)>,
    /// Plaintext arrives from the TLS library: the socket's own bytes are
    /// ciphertext and are ignored.
    tls: bool,
    /// The kernel's context for the next server request read on this
    /// connection (TCP option propagation; see `EventKind::ServerContext`).
    server_kctx: Option<KernelContext>,
    /// What the kernel was told to stop sending, and when (CLOCK_MONOTONIC
    /// ns): an event of that kind that started later means the kernel
    /// forgot (its LRU entry went), and it is told again.
    muted: Option<(Mute, u64)>,
    /// Socket syscalls left before a connection seen to begin, with no
    /// HTTP/1 start line yet, is judged not HTTP (0: not judging).
    judge: u8,
    /// Per direction: the stream position where the body the kernel was
    /// last told to skip ends (0: none told).
    body_end: [u32; 2],
}

pub struct ConnTable {
    conns: IntMap<Key, Box<Conn>>,
    max_conns: usize,
    procs: ProcessCache,
    /// Selection decision per pid, cleared with the process cache.
    selected: IntMap<u32, bool>,
    selector: Selector,
    clock: BootClock,
    limits: Limits,
    stats: Arc<Stats>,
    exchanges: Vec<Exchange>,
    linker: Linker,
    /// The linker's tallies as last published into `stats`.
    link_published: [u64; 3],
    /// What span assembly reuses.
    scratch: Scratch,
    /// Where judgements go to the kernel (none in unit tests).
    filter: Option<Box<dyn KernelFilter>>,
    /// Connections accepted or connected under the agent, until their
    /// first bytes (see `Conn::judge`).
    began: HashSet<Key, rustc_hash::FxBuildHasher>,
    /// `--skip-bodies-from` (0: never).
    skip_bodies_from: u64,
}

impl ConnTable {
    pub fn new(selector: Selector, clock: BootClock, max_conns: usize, stats: Arc<Stats>) -> Self {
        Self::with_linker(selector, clock, max_conns, stats, Linker::default())
    }

    pub fn with_linker(
        selector: Selector,
        clock: BootClock,
        max_conns: usize,
        stats: Arc<Stats>,
        linker: Linker,
    ) -> Self {
        Self {
            conns: IntMap::default(),
            max_conns,
            procs: ProcessCache::new(4096),
            selected: IntMap::default(),
            selector,
            clock,
            limits: Limits::default(),
            stats,
            exchanges: Vec::new(),
            linker,
            link_published: [0; 3],
            scratch: Scratch::default(),
            filter: None,
            began: HashSet::default(),
            skip_bodies_from: DEFAULT_SKIP_BODIES_FROM,
        }
    }

    /// Bodies with at least `bytes` to come have their middle sent as
    /// lengths only (0: never).
    pub fn with_skip_bodies_from(mut self, bytes: u64) -> Self {
        self.skip_bodies_from = bytes;
        self
    }

    /// Hands the table's judgements (untraced processes, muted
    /// connections) to the kernel, so that their syscalls stop costing.
    pub fn with_kernel_filter(mut self, filter: Box<dyn KernelFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Handles one kernel event; finished spans are appended to `out`.
    pub fn on_event(&mut self, ev: &Event<'_>, out: &mut Vec<Span>) {
        let h = &ev.hdr;
        match ev.kind {
            EventKind::Data => {
                if let Some(d) = &ev.data {
                    self.on_data(h, d, out);
                }
            }
            // A fresh connection on this fd: whatever we held for it is
            // over (its close() was missed, e.g. dup2 or fd passing).
            EventKind::Accept | EventKind::Connect => {
                self.close_conn((h.tgid, h.fd), h.ts_exit_ns, out);
                if self.began.len() >= MAX_BEGAN {
                    // Connections that never sent a byte: forget them (their
                    // first bytes then mute nothing, which is only slower).
                    self.began.clear();
                }
                self.began.insert((h.tgid, h.fd));
            }
            EventKind::Close => {
                self.close_conn((h.tgid, h.fd), h.ts_exit_ns, out);
                self.began.remove(&(h.tgid, h.fd));
            }
            EventKind::ProcessExit => {
                self.began.retain(|k| k.0 != h.tgid);
                let keys: Vec<Key> = self
                    .conns
                    .keys()
                    .filter(|k| k.0 == h.tgid)
                    .copied()
                    .collect();
                for k in keys {
                    self.close_conn(k, h.ts_exit_ns, out);
                }
                self.procs.remove(h.tgid);
                self.selected.remove(&h.tgid);
                self.linker.process_exit(h.tgid);
            }
            EventKind::RequestIntent => self.on_intent(ev, out),
            EventKind::ServerContext => {
                if self.ensure_conn(h, out)
                    && let Some(c) = self.conns.get_mut(&(h.tgid, h.fd))
                    && (c.sk == h.sk || h.sk == 0)
                {
                    c.server_kctx = ev.context;
                }
            }
            EventKind::ProcessExec => {
                self.procs
                    .exec(h.tgid, ev.exec_filename.unwrap_or_default());
                self.selected.remove(&h.tgid);
            }
        }
    }

    /// The connection for this event's (tgid, fd), created if the process
    /// is selected; a different `struct sock` on the fd ends the old one.
    /// False when the process is not traced.
    fn ensure_conn(&mut self, h: &EventHeader, out: &mut Vec<Span>) -> bool {
        let key = (h.tgid, h.fd);
        // One lookup on the usual path (the connection is there, same sock).
        if let Some(c) = self.conns.get(&key) {
            if h.sk == 0 || c.sk == 0 || c.sk == h.sk {
                return true;
            }
            self.close_conn(key, h.ts_enter_ns, out);
        }
        let Some(process) = self.process_selected(h.tgid) else {
            return false;
        };
        if self.conns.len() >= self.max_conns {
            self.evict();
        }
        add(&self.stats.conns_opened, 1);
        let c = Box::new(Conn {
            sk: h.sk,
            ends: Endpoints::default(),
            http: Http1Conn::new(self.limits),
            last_ts: h.ts_exit_ns,
            process,
            ctxs: Started::default(),
            intent: None,
            tls: false,
            server_kctx: None,
            muted: None,
            judge: if self.began.remove(&key) {
                NOT_HTTP_AFTER
            } else {
                0
            },
            body_end: [0; 2],
        });
        self.conns.insert(key, c);
        true
    }

    /// A thread is about to send a request: decide its identity now, and
    /// offer it to a same-node server (see `EventKind::RequestIntent`).
    fn on_intent(&mut self, ev: &Event<'_>, out: &mut Vec<Span>) {
        let h = &ev.hdr;
        if !self.ensure_conn(h, out) {
            return;
        }
        let Some(c) = self.conns.get_mut(&(h.tgid, h.fd)) else {
            return;
        };
        if let Some(t) = ev.intent_tuple.filter(|t| t.family != 0) {
            c.ends = Endpoints {
                local: t.local(),
                remote: t.remote(),
            };
        }
        if c.sk != h.sk || c.http.role() == Some(Role::Server) || c.http.is_opaque() {
            return;
        }
        if let Some((stale, _)) = c.intent.take() {
            self.linker.client_done(c.ends, &stale.ctx);
        }
        let kernel = ev.context.map(|k| k.ctx);
        let ctx = self
            .linker
            .client_intent(c.process.pid, h.tid, c.ends, kernel);
        c.intent = Some((ctx, h.tid));
    }

    fn process_selected(&mut self, tgid: u32) -> Option<Arc<ProcessInfo>> {
        let info = self.procs.get(tgid);
        let sel = match self.selected.get(&tgid) {
            Some(&s) => s,
            None => {
                if self.selected.len() >= 4096 {
                    self.selected.clear();
                }
                let s = self.selector.process(&info);
                self.selected.insert(tgid, s);
                if !s && let Some(f) = &mut self.filter {
                    let counter = if f.untrace_process(tgid) {
                        &self.stats.processes_untraced
                    } else {
                        &self.stats.kernel_filter_refused
                    };
                    add(counter, 1);
                }
                s
            }
        };
        sel.then_some(info)
    }

    fn on_data(&mut self, h: &EventHeader, d: &DataPart<'_>, out: &mut Vec<Span>) {
        let key = (h.tgid, h.fd);
        if !self.ensure_conn(h, out) {
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.last_ts = h.ts_exit_ns;
        if d.tuple.family != 0 {
            c.ends = Endpoints {
                local: d.tuple.local(),
                remote: d.tuple.remote(),
            };
        }
        if log::log_enabled!(log::Level::Trace) {
            let head = &d.payload[..d.payload.len().min(24)];
            log::trace!(
                "data tgid={} tid={} fd={} {:?} {:?} flags={} ret={} captured={} {:?}",
                h.tgid,
                h.tid,
                h.fd,
                d.direction,
                d.syscall,
                h.flags,
                h.ret,
                d.payload.len(),
                String::from_utf8_lossy(head)
            );
        }
        let tls_bytes = h.flags & FLAG_TLS != 0;
        if let Some((m, _)) = c.muted
            && (m == Mute::All || !tls_bytes)
        {
            // Sent before the kernel was told, or the kernel forgot (then
            // it is told again).
            mute(c, h, m, &mut self.filter, &self.stats);
            return;
        }
        if tls_bytes && !c.tls {
            // From now on the socket's bytes are ciphertext. Whatever the
            // parser saw of them (a handshake) was not HTTP.
            c.tls = true;
            c.http = Http1Conn::new(self.limits);
            add(&self.stats.tls_connections, 1);
        } else if c.tls && !tls_bytes {
            // Ciphertext outside the TLS library's calls (a handshake, a
            // renegotiation): the kernel need not send it.
            mute(c, h, Mute::Socket, &mut self.filter, &self.stats);
            return;
        }
        if c.http.is_opaque() {
            mute(c, h, opaque_mute(c), &mut self.filter, &self.stats);
            return;
        }
        // Reads: the first byte is there when the syscall returns. Writes:
        // the first byte leaves when the syscall starts (a response head's
        // send carries its exit time there: see `EventHeader::ts_enter_ns`).
        let (t_first, t_last) = match d.direction {
            Direction::Ingress => (h.ts_exit_ns, h.ts_exit_ns),
            Direction::Egress => (h.ts_enter_ns, h.ts_exit_ns),
        };
        let before = c.http.counters();
        let seq0 = c.http.next_seq();
        let total = usize::try_from(h.ret).unwrap_or(0);
        c.http.feed(
            d.direction,
            d.payload,
            total,
            t_first,
            t_last,
            &mut self.exchanges,
        );
        count_parser(&self.stats, before, c.http.counters());
        if !tls_bytes && h.flags & FLAG_SEQ != 0 && self.skip_bodies_from != 0 {
            let from = self.skip_bodies_from;
            skip_body(c, h, d.direction, from, &mut self.filter, &self.stats);
        }
        if c.judge > 0 && !tls_bytes {
            if c.http.is_http() {
                c.judge = 0;
            } else if !c.http.start_line_pending() {
                // A start line still matching (sent a few bytes at a time)
                // is not counted against the connection.
                c.judge -= 1;
            }
            if c.judge == 0 && !c.http.is_http() {
                // Its socket bytes are not HTTP. (Its TLS plaintext may be:
                // these bytes may have been a handshake.)
                mute(c, h, Mute::Socket, &mut self.filter, &self.stats);
            }
        }
        if c.http.is_opaque() {
            mute(c, h, opaque_mute(c), &mut self.filter, &self.stats);
        } else if !self.selector.server_port(server_port(c, c.http.role())) {
            // `--open-ports` leaves the connection out: its spans would be
            // dropped at `emit`, its bytes need not come at all.
            mute(c, h, Mute::All, &mut self.filter, &self.stats);
        }
        assign_contexts(c, seq0, h.tid, &self.exchanges, &mut self.linker);
        if !self.exchanges.is_empty() {
            emit(
                c,
                &mut self.exchanges,
                &mut self.linker,
                &self.selector,
                &self.clock,
                &mut self.scratch,
                out,
            );
        }
    }

    fn close_conn(&mut self, key: Key, ts: u64, out: &mut Vec<Span>) {
        let Some(mut c) = self.conns.remove(&key) else {
            return;
        };
        if let Some((stale, _)) = c.intent.take() {
            self.linker.client_done(c.ends, &stale.ctx);
        }
        let before = c.http.counters();
        c.http.close(ts, &mut self.exchanges);
        count_parser(&self.stats, before, c.http.counters());
        emit(
            &mut c,
            &mut self.exchanges,
            &mut self.linker,
            &self.selector,
            &self.clock,
            &mut self.scratch,
            out,
        );
    }

    /// Drops the least recently used sixteenth of the table (at least one).
    fn evict(&mut self) {
        let n = (self.conns.len() / 16).max(1);
        let mut ages: Vec<(u64, Key)> = self.conns.iter().map(|(k, c)| (c.last_ts, *k)).collect();
        ages.select_nth_unstable_by_key(n - 1, |a| a.0);
        for (_, k) in ages.into_iter().take(n) {
            if let Some(c) = self.conns.remove(&k) {
                add(&self.stats.requests_lost_evicted, c.http.pending() as u64);
                // Its requests no longer occupy their threads or peers.
                for (ctx, tid) in c.ctxs.iter() {
                    match c.http.role() {
                        Some(Role::Server) => self.linker.server_done(c.process.pid, tid, &ctx.ctx),
                        Some(Role::Client) => self.linker.client_done(c.ends, &ctx.ctx),
                        None => {}
                    }
                }
            }
        }
        add(&self.stats.conns_evicted, n as u64);
    }

    /// Publishes the linker's tallies into the shared stats (the linker
    /// counts in plain integers on the hot path): the new part since the
    /// last call. Called once per ring-buffer wake-up.
    pub fn publish_link_stats(&mut self) {
        let l = &self.linker;
        let now = [l.invalid_traceparents, l.option_trace_mismatches, l.resets];
        let to = [
            &self.stats.traceparents_invalid,
            &self.stats.trace_option_mismatches,
            &self.stats.trace_link_resets,
        ];
        for ((n, p), c) in now.iter().zip(self.link_published.iter_mut()).zip(to) {
            if *n > *p {
                add(c, *n - *p);
                *p = *n;
            }
        }
    }

    /// At shutdown: requests still waiting for a response are counted, not
    /// reported as failures of the service.
    pub fn shutdown(&mut self) {
        let pending: usize = self.conns.values().map(|c| c.http.pending()).sum();
        add(&self.stats.requests_lost_shutdown, pending as u64);
        self.conns.clear();
        let l = &self.linker;
        add(&self.stats.traceparents_invalid, l.invalid_traceparents);
        add(
            &self.stats.trace_option_mismatches,
            l.option_trace_mismatches,
        );
        add(&self.stats.trace_link_resets, l.resets);
    }
}

/// Gives every request that began in the last feed (sequence number
/// `seq0` on) its span identity, now, so that what it causes can link to it.
fn assign_contexts(c: &mut Conn, seq0: u64, tid: u32, exchanges: &[Exchange], linker: &mut Linker) {
    let Some(role) = c.http.role() else {
        return;
    };
    let pid = c.process.pid;
    let started = c.http.requests_from(seq0).chain(
        exchanges
            .iter()
            .filter(|e| e.seq >= seq0)
            .map(|e| (e.seq, &e.request)),
    );
    for (seq, head) in started {
        if c.ctxs.contains(seq) {
            continue;
        }
        let (ctx, tid) = match (role, c.intent.take()) {
            (Role::Server, _) => {
                let kernel = c.server_kctx.take();
                (linker.server_request(pid, tid, c.ends, head, kernel), tid)
            }
            // The identity decided at the intent stands, unless the request
            // carries its own valid traceparent (an instrumented client).
            (Role::Client, Some(intent))
                if parse_inbound(&head.traceparent, &head.tracestate).is_err() =>
            {
                intent
            }
            (Role::Client, intent) => {
                if let Some((stale, _)) = intent {
                    linker.client_done(c.ends, &stale.ctx);
                }
                (linker.client_request(pid, tid, c.ends, head), tid)
            }
        };
        c.ctxs.insert(seq, ctx, tid);
    }
}

/// Turns collected exchanges into spans, applying `--open-ports`.
fn emit(
    c: &mut Conn,
    exchanges: &mut Vec<Exchange>,
    linker: &mut Linker,
    selector: &Selector,
    clock: &BootClock,
    scratch: &mut Scratch,
    out: &mut Vec<Span>,
) {
    for ex in exchanges.drain(..) {
        // A request that began before we could see it (or past a gap)
        // still gets an identity: its own trace.
        let (ctx, tid) = c.ctxs.take(ex.seq).unwrap_or_else(|| (ReqCtx::root(), 0));
        match ex.role {
            Role::Server => linker.server_done(c.process.pid, tid, &ctx.ctx),
            Role::Client => linker.client_done(c.ends, &ctx.ctx),
        }
        if selector.server_port(server_port(c, Some(ex.role))) {
            out.push(span_from_exchange(
                ex,
                ctx,
                c.ends,
                c.tls,
                c.process.clone(),
                clock,
                scratch,
            ));
        }
    }
}

/// The connection's server-side port, for `--open-ports`: ours when we
/// serve, the peer's when we call. None until both role and address are
/// known.
fn server_port(c: &Conn, role: Option<Role>) -> Option<u16> {
    match role? {
        Role::Server => c.ends.local.map(|a| a.port()),
        Role::Client => c.ends.remote.map(|a| a.port()),
    }
}

/// A connection whose bytes are not HTTP: its socket's payload is of no
/// use. Its TLS plaintext too once that was seen; before, the bytes may be
/// a TLS handshake whose plaintext is yet to come.
fn opaque_mute(c: &Conn) -> Mute {
    if c.tls { Mute::All } else { Mute::Socket }
}

/// Tells the kernel to stop sending what `mute` says for `c`, the
/// connection of event `h`: once, and again only when an event of that
/// kind started after the last time (the kernel forgot).
fn mute(
    c: &mut Conn,
    h: &EventHeader,
    mute: Mute,
    filter: &mut Option<Box<dyn KernelFilter>>,
    stats: &Stats,
) {
    let Some(f) = filter else {
        return;
    };
    if h.sk == 0 {
        return;
    }
    let mute = match c.muted {
        Some((done, at)) if done == mute || done == Mute::All => {
            // A read's event, and a response head's, carries its exit
            // time here (see `EventHeader::ts_enter_ns`): one that began
            // before the tell and ended after it is told again, a harmless
            // blind write.
            if h.ts_enter_ns <= at {
                return; // sent before the kernel was told
            }
            done
        }
        _ => mute,
    };
    let first = c.muted.is_none();
    c.muted = Some((mute, monotonic_now_ns()));
    match f.mute(h.tgid, h.fd, h.sk, mute) {
        // Counted once per connection, not per renewal.
        Told::Yes if first => add(&stats.conns_muted, 1),
        Told::Yes | Told::Gone => {}
        Told::Refused => add(&stats.kernel_filter_refused, 1),
    }
}

/// After an event of `c` in `dir` (header `h`, which has a stream
/// position): if the message it belongs to has a long Content-Length body
/// still to come, tells the kernel where that body ends, so that the
/// syscalls inside it send their length only. The parser counts such
/// lengths off the body exactly as it counts uncaptured bytes today.
/// Told once per body: the events the kernel sent before it knew lead to
/// the same end. (Were the kernel's entry evicted meanwhile, the rest of
/// the body comes with payloads: slower, nothing lost.)
fn skip_body(
    c: &mut Conn,
    h: &EventHeader,
    dir: Direction,
    from: u64,
    filter: &mut Option<Box<dyn KernelFilter>>,
    stats: &Stats,
) {
    let Some(f) = filter else {
        return;
    };
    let Some(rest) = c.http.body_rest(dir) else {
        return;
    };
    if rest < from || h.sk == 0 {
        return;
    }
    let at = h.seq.wrapping_add(h.ret as u32);
    let end = at.wrapping_add(rest.min(SKIP_BODY_MAX) as u32);
    let told = &mut c.body_end[dir as usize];
    // 0 means "none" to the kernel; a body over SKIP_BODY_MAX is told
    // again only once past the end it was told.
    if end == 0 || *told == end || (*told != 0 && told.wrapping_sub(at) as i32 > 0) {
        return;
    }
    *told = end;
    let entry = SocketEntry {
        sk: h.sk | c.muted.map_or(0, |(m, _)| m.bits()),
        body_end: c.body_end,
    };
    match f.skip_body(h.tgid, h.fd, entry) {
        Told::Yes => add(&stats.bodies_skipped, 1),
        Told::Gone => {}
        Told::Refused => add(&stats.kernel_filter_refused, 1),
    }
}

fn count_parser(s: &Stats, b: Http1Counters, a: Http1Counters) {
    add(&s.http1_malformed, a.malformed.saturating_sub(b.malformed));
    add(
        &s.http1_head_too_large,
        a.head_too_large.saturating_sub(b.head_too_large),
    );
    add(
        &s.http1_pending_overflow,
        a.pending_overflow.saturating_sub(b.pending_overflow),
    );
    add(&s.http1_gaps, a.gaps.saturating_sub(b.gaps));
    add(
        &s.http1_orphan_responses,
        a.orphan_responses.saturating_sub(b.orphan_responses),
    );
}

#[cfg(test)]
mod tests;
