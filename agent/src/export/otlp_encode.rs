//! Encodes a batch straight into the protobuf bytes of an
//! `ExportTraceServiceRequest`, the bytes prost makes of
//! [`otlp::to_request`], without building that request first. Building it
//! cost an owned copy of every span's strings (name, every attribute key
//! and value) per export, dropped again right after encoding: at 10k
//! spans/s that was a large share of the agent's allocations.
//!
//! Only spans are encoded by hand (fields in prost's order, defaults left
//! out as prost does); the one resource and scope per process are built
//! and encoded by prost, once per batch. A unit test holds the bytes equal
//! to prost's.

use std::{io::Write as _, net::IpAddr};

use prost::encoding::{self, WireType, encoded_len_varint};

use super::otlp;
use crate::span::{AttrValue, Span, SpanKind, Status};

/// Scratch buffers reused from batch to batch.
#[derive(Default)]
pub struct RequestEncoder {
    /// One span's body, before its length prefix is known.
    span: Vec<u8>,
    /// One process's spans (each with key and length), likewise.
    spans: Vec<u8>,
    /// Batch indices grouped by process, in order of first appearance.
    order: Vec<usize>,
    ip: IpText,
}

impl RequestEncoder {
    /// The encoded request for `batch`, grouped by process like
    /// [`otlp::to_request`].
    pub fn encode(&mut self, batch: &[Span]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.len() * 512 + 1024);
        self.order.clear();
        // Group by pid keeping first-appearance order; batches hold few
        // processes, so a scan per new pid beats hashing every span.
        let mut done = vec![false; batch.len()];
        for first in 0..batch.len() {
            if done[first] {
                continue;
            }
            let pid = batch[first].process.pid;
            let start = self.order.len();
            for (i, sp) in batch.iter().enumerate().skip(first) {
                if !done[i] && sp.process.pid == pid {
                    done[i] = true;
                    self.order.push(i);
                }
            }
            self.spans.clear();
            let scope = otlp::scope();
            encoding::message::encode(1, &scope, &mut self.spans);
            for &i in &self.order[start..] {
                self.span.clear();
                encode_span(&batch[i], &mut self.ip, &mut self.span);
                encode_key(2, WireType::LengthDelimited, &mut self.spans);
                encode_varint(self.span.len() as u64, &mut self.spans);
                self.spans.extend_from_slice(&self.span);
            }
            let resource = otlp::resource(&batch[first].process);
            let body = encoding::message::encoded_len(1, &resource)
                + 1
                + encoded_len_varint(self.spans.len() as u64)
                + self.spans.len();
            // ExportTraceServiceRequest.resource_spans = 1
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(body as u64, &mut out);
            // ResourceSpans.resource = 1, .scope_spans = 2
            encoding::message::encode(1, &resource, &mut out);
            encode_key(2, WireType::LengthDelimited, &mut out);
            encode_varint(self.spans.len() as u64, &mut out);
            out.extend_from_slice(&self.spans);
        }
        out
    }
}

/// prost's `encode_varint`, for a `Vec` and inlined: prost's is generic
/// over `BufMut` and was not inlined, a call per tag and length (a third
/// of the encoding time); nearly all of ours are one byte.
#[inline]
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn bytes_field(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    if !v.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(v.len() as u64, buf);
        buf.extend_from_slice(v);
    }
}

fn varint_field(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn fixed64_field(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// `opentelemetry.proto.trace.v1.Span`, fields in the order prost writes
/// them (its struct order: `flags`, tag 16, comes before `name`; we never
/// set it, nor events, links or the dropped counts).
fn encode_span(sp: &Span, ip: &mut IpText, buf: &mut Vec<u8>) {
    bytes_field(1, &sp.trace_id, buf);
    bytes_field(2, &sp.span_id, buf);
    bytes_field(3, sp.trace_state.as_bytes(), buf);
    bytes_field(4, sp.parent_span_id.as_ref().map_or(&[], |p| &p[..]), buf);
    bytes_field(5, sp.name.as_bytes(), buf);
    let kind = match sp.kind {
        SpanKind::Server => otlp::PKind::Server,
        SpanKind::Client => otlp::PKind::Client,
    };
    varint_field(6, kind as i32 as u64, buf);
    fixed64_field(7, sp.start_unix_ns, buf);
    fixed64_field(8, sp.end_unix_ns, buf);
    for (k, v) in &sp.attributes {
        encode_attribute(k, v, ip, buf);
    }
    // Status = 15, always present (see `otlp::span`): message = 2, code = 3.
    let (message, code) = match &sp.status {
        Status::Unset => ("", otlp::StatusCode::Unset),
        Status::Error(m) => (m.as_str(), otlp::StatusCode::Error),
    };
    let code = code as i32 as u64;
    let mut len = 0;
    if !message.is_empty() {
        len += 1 + encoded_len_varint(message.len() as u64) + message.len();
    }
    if code != 0 {
        len += 1 + encoded_len_varint(code);
    }
    encode_key(15, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    bytes_field(2, message.as_bytes(), buf);
    varint_field(3, code, buf);
}

/// A `KeyValue` (key = 1, value = 2) in `Span.attributes` (= 9). The
/// `AnyValue` is always present, and its oneof field is written even when
/// it holds a default (prost writes a set oneof whatever its value).
fn encode_attribute(key: &str, v: &AttrValue, ip_text: &mut IpText, buf: &mut Vec<u8>) {
    let str_value = match v {
        AttrValue::Str(s) => Some(s.as_bytes()),
        AttrValue::Ip(ip) => Some(ip_text.get(*ip)),
        AttrValue::Int(_) => None,
    };
    let any_len = match (str_value, v) {
        (Some(s), _) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        (None, AttrValue::Int(i)) => 1 + encoded_len_varint(*i as u64),
        (None, _) => 0,
    };
    let key_len = if key.is_empty() {
        0
    } else {
        1 + encoded_len_varint(key.len() as u64) + key.len()
    };
    let kv_len = key_len + 1 + encoded_len_varint(any_len as u64) + any_len;
    encode_key(9, WireType::LengthDelimited, buf);
    encode_varint(kv_len as u64, buf);
    bytes_field(1, key.as_bytes(), buf);
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(any_len as u64, buf);
    match (str_value, v) {
        (Some(s), _) => {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s);
        }
        (None, AttrValue::Int(i)) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        (None, _) => {}
    }
}

/// The longest text of an IP address
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_TEXT_MAX: usize = 45;

/// The text of the last IP address encoded: a span's peer is two
/// attributes, and consecutive spans mostly share their peers.
struct IpText {
    ip: Option<IpAddr>,
    text: [u8; IP_TEXT_MAX],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        Self {
            ip: None,
            text: [0; IP_TEXT_MAX],
            len: 0,
        }
    }
}

impl IpText {
    /// `ip`'s text, as `Display` writes it (no allocation).
    fn get(&mut self, ip: IpAddr) -> &[u8] {
        if self.ip != Some(ip) {
            let mut rest = &mut self.text[..];
            // Cannot fail: the buffer holds the longest address.
            let _ = write!(rest, "{ip}");
            self.len = IP_TEXT_MAX - rest.len();
            self.ip = Some(ip);
        }
        &self.text[..self.len]
    }
}

#[cfg(test)]
mod tests;
