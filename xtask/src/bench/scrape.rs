//! One scrape of the agent's `/metrics` (`--metrics-addr`): the Prometheus
//! text format read just enough to sum each metric's series by name.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result, bail};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Metric name -> the sum of its series (all label sets).
pub type Metrics = BTreeMap<String, f64>;

pub fn scrape(addr: SocketAddr) -> Result<Metrics> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to the agent's metrics at {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT)).context("SO_RCVTIMEO")?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .context("sending GET /metrics")?;
    let mut text = String::new();
    s.read_to_string(&mut text).context("reading /metrics")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP head in the /metrics answer");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {:?}", head.lines().next().unwrap_or(""));
    }
    Ok(parse(body))
}

fn parse(body: &str) -> Metrics {
    let mut m = Metrics::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *m.entry(name.to_string()).or_default() += v;
        }
    }
    m
}

/// The value of `name`, 0 when absent.
pub fn get(m: &Metrics, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_by_name() {
        let m = parse(
            "# HELP x y\n# TYPE wirespan_spans_dropped_total counter\n\
             wirespan_spans_dropped_total{reason=\"queue_full\"} 3\n\
             wirespan_spans_dropped_total{reason=\"shutdown\"} 2\n\
             wirespan_connections_tracked 17\n",
        );
        assert_eq!(get(&m, "wirespan_spans_dropped_total"), 5.0);
        assert_eq!(get(&m, "wirespan_connections_tracked"), 17.0);
        assert_eq!(get(&m, "absent"), 0.0);
    }
}
