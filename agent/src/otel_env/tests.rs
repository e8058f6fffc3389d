use super::*;

/// Arguments named here count as coming from the environment.
struct Env(&'static [&'static str]);

impl Sources for Env {
    fn is_env(&self, id: &str) -> bool {
        self.0.contains(&id)
    }
}

fn flags() -> Env {
    Env(&[])
}

fn args(f: impl FnOnce(&mut OtlpArgs)) -> OtlpArgs {
    let mut a = OtlpArgs::default();
    f(&mut a);
    a
}

fn err(a: &OtlpArgs, src: &dyn Sources) -> String {
    resolve(a, src).unwrap_err().to_string()
}

#[test]
fn defaults_mean_no_otlp() {
    let s = resolve(&OtlpArgs::default(), &flags()).unwrap();
    assert!(s.otlp.is_none());
    assert_eq!(s.bsp, BspSettings::default());
    assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
}

#[test]
fn endpoint_path_rules() {
    let url = |f: fn(&mut OtlpArgs)| {
        resolve(&args(f), &flags())
            .unwrap()
            .otlp
            .unwrap()
            .endpoint
            .to_string()
    };
    // gRPC: as given.
    assert_eq!(
        url(|a| a.endpoint = Some("http://c:4317".into())),
        "http://c:4317/"
    );
    // HTTP, generic endpoint: the signal path is appended.
    assert_eq!(
        url(|a| {
            a.endpoint = Some("http://c:4318/base/".into());
            a.protocol = Some("http/protobuf".into());
        }),
        "http://c:4318/base/v1/traces"
    );
    // HTTP, traces endpoint: as given, and it wins.
    assert_eq!(
        url(|a| {
            a.endpoint = Some("http://c:4318".into());
            a.traces_endpoint = Some("http://t:4318/custom".into());
            a.protocol = Some("http/protobuf".into());
        }),
        "http://t:4318/custom"
    );
}

#[test]
fn traces_variants_win() {
    let s = resolve(
        &args(|a| {
            a.endpoint = Some("https://c".into());
            a.protocol = Some("grpc".into());
            a.traces_protocol = Some("http/protobuf".into());
            a.headers = Some("a=1".into());
            a.traces_headers = Some("b=2".into());
            a.timeout = Some("100".into());
            a.traces_timeout = Some("200".into());
            a.compression = Some("none".into());
            a.traces_compression = Some("gzip".into());
        }),
        &flags(),
    )
    .unwrap();
    let o = s.otlp.unwrap();
    assert_eq!(o.protocol, Protocol::HttpProtobuf);
    assert_eq!(o.endpoint.as_str(), "https://c/v1/traces");
    assert_eq!(o.headers.len(), 1);
    assert_eq!(o.headers[0].0.as_str(), "b");
    assert_eq!(o.timeout, Duration::from_millis(200));
    assert_eq!(o.compression, Compression::Gzip);
}

#[test]
fn empty_values_are_unset() {
    let s = resolve(
        &args(|a| {
            a.endpoint = Some(" ".into());
            a.protocol = Some(String::new());
        }),
        &flags(),
    )
    .unwrap();
    assert!(s.otlp.is_none());
}

#[test]
fn errors_name_the_variable_or_the_flag() {
    let bad = args(|a| a.protocol = Some("bogus".into()));
    assert!(err(&bad, &flags()).starts_with("--otlp-protocol: unknown protocol `bogus`"));
    assert!(err(&bad, &Env(&["protocol"])).starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: "));

    type Set = fn(&mut OtlpArgs);
    let cases: [(Set, &str); 13] = [
        (
            |a| a.endpoint = Some("collector:4317".into()),
            "OTEL_EXPORTER_OTLP_ENDPOINT: ",
        ),
        (
            |a| a.traces_endpoint = Some("::".into()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ",
        ),
        (
            |a| a.traces_protocol = Some("http/json".into()),
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: ",
        ),
        (
            |a| a.headers = Some("novalue".into()),
            "OTEL_EXPORTER_OTLP_HEADERS: ",
        ),
        (
            |a| a.timeout = Some("10s".into()),
            "OTEL_EXPORTER_OTLP_TIMEOUT: ",
        ),
        (
            |a| a.compression = Some("zstd".into()),
            "OTEL_EXPORTER_OTLP_COMPRESSION: ",
        ),
        (
            |a| a.certificate = Some("/nonexistent/ca.pem".into()),
            "OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read",
        ),
        (
            |a| a.certificate = Some("/proc/self/status".into()),
            "OTEL_EXPORTER_OTLP_CERTIFICATE: ",
        ),
        (
            |a| a.resource_attributes = Some("a=1,b".into()),
            "OTEL_RESOURCE_ATTRIBUTES: ",
        ),
        (
            |a| a.bsp_max_queue_size = Some("0".into()),
            "OTEL_BSP_MAX_QUEUE_SIZE: ",
        ),
        (
            |a| a.bsp_schedule_delay = Some("soon".into()),
            "OTEL_BSP_SCHEDULE_DELAY: ",
        ),
        (
            |a| a.shutdown_timeout = Some("0".into()),
            "WIRESPAN_SHUTDOWN_TIMEOUT: ",
        ),
        (
            |a| a.bsp_max_concurrent_exports = Some("0".into()),
            "OTEL_BSP_MAX_CONCURRENT_EXPORTS: ",
        ),
    ];
    let all_env = Env(&[
        "endpoint",
        "traces_endpoint",
        "traces_protocol",
        "headers",
        "timeout",
        "compression",
        "certificate",
        "resource_attributes",
        "bsp_max_queue_size",
        "bsp_schedule_delay",
        "shutdown_timeout",
        "bsp_max_concurrent_exports",
    ]);
    for (set, prefix) in cases {
        let e = err(&args(set), &all_env);
        assert!(e.starts_with(prefix), "{e:?} should start with {prefix:?}");
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
}

#[test]
fn concurrent_exports_default_to_four_and_are_capped() {
    let s = resolve(&args(|_| {}), &flags()).unwrap();
    assert_eq!(s.bsp.max_concurrent_exports, 4);
    let s = resolve(
        &args(|a| a.bsp_max_concurrent_exports = Some("1000".into())),
        &flags(),
    )
    .unwrap();
    assert_eq!(s.bsp.max_concurrent_exports, super::MAX_CONCURRENT_EXPORTS);
}

#[test]
fn batch_size_is_capped_by_queue_size() {
    let s = resolve(
        &args(|a| {
            a.bsp_max_queue_size = Some("100".into());
            a.bsp_max_export_batch_size = Some("512".into());
            a.bsp_schedule_delay = Some("0".into());
        }),
        &flags(),
    )
    .unwrap();
    assert_eq!(s.bsp.max_queue_size, 100);
    assert_eq!(s.bsp.max_export_batch_size, 100);
    assert_eq!(s.bsp.schedule_delay, Duration::ZERO);
}

#[test]
fn flags_and_variables_match_clap() {
    use clap::{Args, Command, FromArgMatches};
    let cmd = OtlpArgs::augment_args(Command::new("t"));
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let long = arg.get_long().unwrap_or_default();
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
        let flag = format!("--{long}");
        let m = cmd
            .clone()
            .try_get_matches_from(["t", flag.as_str(), "x"])
            .unwrap();
        let parsed = OtlpArgs::from_arg_matches(&m).unwrap();
        assert_eq!(parsed.get(id), Some(("x", flag.as_str(), env)), "{id}");
    }
}
