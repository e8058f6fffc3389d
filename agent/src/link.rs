//! Trace linking with no code changes in the services. Each request gets
//! its span identity when it *starts*, so that work it causes can point at
//! it before it ends:
//! - a server request with a valid W3C `traceparent` joins that trace;
//! - else one whose connection brought a trace-context TCP option (another
//!   agent's client span, on this node or another) becomes its child;
//! - else, on one node, a server request whose connection is the other end
//!   of a traced client request becomes that client span's child;
//! - a client request made by a thread while that thread handles a server
//!   request becomes the server span's child (thread-per-request servers).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use wirespan_common::event::{WireContext, user::KernelContext};

use crate::{
    inthash::IntMap,
    protocol::http1::RequestHead,
    span::{
        assemble::Endpoints,
        context::{SpanContext, parse_inbound},
        new_ids,
    },
};

/// Where a span's parent came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkSource {
    /// No parent: a new trace.
    Root,
    /// The request's own `traceparent` header.
    Header,
    /// The same thread was serving a request (in-process).
    Thread,
    /// The client span on the other end of this connection (same node).
    Peer,
    /// The calling client span, from the connection's TCP option.
    TcpOption,
}

/// A request's span identity, decided when the request starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReqCtx {
    pub ctx: SpanContext,
    pub parent: Option<[u8; 8]>,
    pub tracestate: String,
    pub source: LinkSource,
}

impl ReqCtx {
    pub fn root() -> Self {
        let (trace_id, span_id) = new_ids();
        Self {
            ctx: SpanContext {
                trace_id,
                span_id,
                flags: 1,
            },
            parent: None,
            tracestate: String::new(),
            source: LinkSource::Root,
        }
    }

    fn child_of(parent: &SpanContext, tracestate: &str, source: LinkSource) -> Self {
        let (_, span_id) = new_ids();
        Self::child_with_id(parent, span_id, tracestate, source)
    }

    fn child_with_id(
        parent: &SpanContext,
        span_id: [u8; 8],
        tracestate: &str,
        source: LinkSource,
    ) -> Self {
        Self {
            ctx: SpanContext {
                trace_id: parent.trace_id,
                span_id,
                flags: parent.flags,
            },
            parent: Some(parent.span_id),
            tracestate: tracestate.to_string(),
            source,
        }
    }
}

/// A connection seen from its client: (client address, server address).
type PeerKey = (SocketAddr, SocketAddr);

/// Bounds: beyond them the maps are cleared (and counted), never grown.
const MAX_THREADS: usize = 64 * 1024;
const MAX_PEERS: usize = 64 * 1024;
const MAX_PER_PEER: usize = 64;

/// Tells the kernel which trace a thread now serves (key: tgid << 32 |
/// tid), when the agent decided otherwise than the kernel (an inbound
/// `traceparent`, a same-node peer): its next client requests then carry
/// that trace in their TCP option.
pub type ThreadTraceSink = Box<dyn FnMut(u64, [u8; 16]) + Send>;

#[derive(Default)]
pub struct Linker {
    /// (tgid, tid) -> the server requests that thread has read and not yet
    /// answered. A client call links to one only when there is exactly one:
    /// an event loop (nginx, Node) with several requests in flight cannot
    /// tell us which one caused the call, and a wrong parent is worse than
    /// none.
    active: IntMap<(u32, u32), Vec<(SpanContext, String)>>,
    /// Client requests in flight, by connection, oldest first. Keyed by
    /// addresses and ports a peer can choose: std's DoS-resistant hasher.
    peers: HashMap<PeerKey, VecDeque<(SpanContext, String)>>,
    pub resets: u64,
    pub invalid_traceparents: u64,
    /// Client requests whose kernel-chosen trace (on the wire) differs from
    /// the trace of the request their thread serves: the thread's request
    /// was decided after the client call left (see [`ThreadTraceSink`]).
    pub option_trace_mismatches: u64,
    thread_trace: Option<ThreadTraceSink>,
}

impl Linker {
    pub fn with_thread_trace(sink: ThreadTraceSink) -> Self {
        Self {
            thread_trace: Some(sink),
            ..Self::default()
        }
    }

    /// A server request read by thread `tid` of `tgid`; `kernel` is the
    /// context the kernel chose for the thread (TCP option propagation).
    pub fn server_request(
        &mut self,
        tgid: u32,
        tid: u32,
        ends: Endpoints,
        head: &RequestHead,
        kernel: Option<KernelContext>,
    ) -> ReqCtx {
        let inbound = parse_inbound(&head.traceparent, &head.tracestate);
        if inbound.is_err() && !head.traceparent.is_empty() {
            self.invalid_traceparents += 1;
        }
        let mut peer = || match (ends.remote, ends.local) {
            (Some(client), Some(server)) => self
                .peers
                .get_mut(&(client, server))
                .and_then(|q| q.pop_front()),
            _ => None,
        };
        let ctx = match (inbound, kernel) {
            (Ok(inbound), _) => {
                ReqCtx::child_of(&inbound.parent, &inbound.tracestate, LinkSource::Header)
            }
            (Err(_), Some(k)) if k.from_peer => {
                // Same node: the peer queue holds the same client span;
                // consume it so that a later request cannot take it.
                let state = match peer() {
                    Some((c, state)) if c.span_id == k.ctx.span_id => state,
                    _ => String::new(),
                };
                let parent = wire_span(&k.ctx);
                ReqCtx::child_of(&parent, &state, LinkSource::TcpOption)
            }
            (Err(_), kernel) => match peer() {
                Some((parent, state)) => ReqCtx::child_of(&parent, &state, LinkSource::Peer),
                None => match kernel {
                    // The kernel's new trace id: its client calls carry it.
                    Some(k) => {
                        let mut root = ReqCtx::root();
                        root.ctx.trace_id = k.ctx.trace_id;
                        root
                    }
                    None => ReqCtx::root(),
                },
            },
        };
        if let (Some(k), Some(sink)) = (kernel, self.thread_trace.as_mut())
            && k.ctx.trace_id != ctx.ctx.trace_id
        {
            sink(u64::from(tgid) << 32 | u64::from(tid), ctx.ctx.trace_id);
        }
        if self.active.len() >= MAX_THREADS && !self.active.contains_key(&(tgid, tid)) {
            self.active.clear();
            self.resets += 1;
        }
        let serving = self.active.entry((tgid, tid)).or_default();
        if serving.len() >= MAX_PER_PEER {
            serving.remove(0);
        }
        serving.push((ctx.ctx, ctx.tracestate.clone()));
        ctx
    }

    /// A client request written by thread `tid` of `tgid`.
    pub fn client_request(
        &mut self,
        tgid: u32,
        tid: u32,
        ends: Endpoints,
        head: &RequestHead,
    ) -> ReqCtx {
        self.client(tgid, tid, ends, &head.traceparent, &head.tracestate, None)
    }

    /// A client request about to be written (the kernel's RequestIntent,
    /// sent at syscall entry): its identity is decided, and offered to a
    /// same-node server, before the server can read it. `kernel` holds the
    /// ids the kernel put in the TCP option, which the span must use.
    pub fn client_intent(
        &mut self,
        tgid: u32,
        tid: u32,
        ends: Endpoints,
        kernel: Option<WireContext>,
    ) -> ReqCtx {
        self.client(tgid, tid, ends, &[], &[], kernel)
    }

    fn client(
        &mut self,
        tgid: u32,
        tid: u32,
        ends: Endpoints,
        traceparent: &[String],
        tracestate: &[String],
        kernel: Option<WireContext>,
    ) -> ReqCtx {
        let serving = match self.active.get(&(tgid, tid)).map(Vec::as_slice) {
            Some([(parent, state)]) => Some((*parent, state.clone())),
            _ => None,
        };
        let ctx = match (parse_inbound(traceparent, tracestate), kernel, serving) {
            // An instrumented client (SDK) already chose the context.
            (Ok(inbound), _, _) => {
                ReqCtx::child_of(&inbound.parent, &inbound.tracestate, LinkSource::Header)
            }
            (Err(_), Some(k), Some((parent, state))) => {
                if parent.trace_id != k.trace_id {
                    self.option_trace_mismatches += 1;
                }
                ReqCtx::child_with_id(&parent, k.span_id, &state, LinkSource::Thread)
            }
            (Err(_), Some(k), None) => ReqCtx {
                ctx: wire_span(&k),
                parent: None,
                tracestate: String::new(),
                source: LinkSource::Root,
            },
            (Err(_), None, Some((parent, state))) => {
                ReqCtx::child_of(&parent, &state, LinkSource::Thread)
            }
            (Err(_), None, None) => ReqCtx::root(),
        };
        if let (Some(local), Some(remote)) = (ends.local, ends.remote) {
            if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&(local, remote)) {
                self.peers.clear();
                self.resets += 1;
            }
            let q = self.peers.entry((local, remote)).or_default();
            if q.len() >= MAX_PER_PEER {
                q.pop_front();
            }
            q.push_back((ctx.ctx, ctx.tracestate.clone()));
        }
        ctx
    }

    /// A server request read by `tid` finished: the thread no longer
    /// serves it.
    pub fn server_done(&mut self, tgid: u32, tid: u32, ctx: &SpanContext) {
        if let Some(serving) = self.active.get_mut(&(tgid, tid)) {
            serving.retain(|(c, _)| c.span_id != ctx.span_id);
            if serving.is_empty() {
                self.active.remove(&(tgid, tid));
            }
        }
    }

    /// A client request finished: a server that has not read it by now is
    /// not on this node (or not traced).
    pub fn client_done(&mut self, ends: Endpoints, ctx: &SpanContext) {
        if let (Some(local), Some(remote)) = (ends.local, ends.remote)
            && let Some(q) = self.peers.get_mut(&(local, remote))
        {
            q.retain(|(c, _)| c.span_id != ctx.span_id);
            if q.is_empty() {
                self.peers.remove(&(local, remote));
            }
        }
    }

    /// A process exited: forget its threads.
    pub fn process_exit(&mut self, tgid: u32) {
        self.active.retain(|&(g, _), _| g != tgid);
    }
}

/// A kernel-chosen context as a sampled span context.
fn wire_span(w: &WireContext) -> SpanContext {
    SpanContext {
        trace_id: w.trace_id,
        span_id: w.span_id,
        flags: 1,
    }
}
