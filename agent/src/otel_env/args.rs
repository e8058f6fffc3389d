//! The flags, each read from its standard environment variable when not
//! given. Values stay raw strings here; `resolve` checks them, so that an
//! error can name the variable the user actually set.

/// Declares the flags and, from the same names, the lookup `resolve` uses.
macro_rules! otlp_args {
    ($( $(#[$m:meta])* $field:ident: $flag:literal, $env:literal, $value:literal; )*) => {
        #[derive(Debug, Clone, Default, clap::Args)]
        #[command(next_help_heading = "OTLP export")]
        pub struct OtlpArgs {
            $(
                $(#[$m])*
                #[arg(long = $flag, env = $env, value_name = $value, hide_env_values = true)]
                pub $field: Option<String>,
            )*
        }

        impl OtlpArgs {
            /// The value given for the argument `id`, with its flag and
            /// variable names.
            pub(super) fn get(&self, id: &str) -> Option<(&str, &'static str, &'static str)> {
                match id {
                    $(stringify!($field) => self
                        .$field
                        .as_deref()
                        .map(|v| (v, concat!("--", $flag), $env)),)*
                    _ => None,
                }
            }
        }
    };
}

otlp_args! {
    /// OTLP collector URL (http:// or https://) for every signal. Setting
    /// an endpoint turns OTLP export on (and the printer off, unless
    /// `--print` is given). For http/protobuf, `/v1/traces` is appended.
    endpoint: "otlp-endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "URL";
    /// OTLP URL for traces, used as-is; wins over `--otlp-endpoint`.
    traces_endpoint: "otlp-traces-endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "URL";
    /// `grpc` (default) or `http/protobuf`.
    protocol: "otlp-protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "PROTOCOL";
    /// Protocol for traces; wins over `--otlp-protocol`.
    traces_protocol: "otlp-traces-protocol", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "PROTOCOL";
    /// Headers sent with every export, as `key=value,key2=value2`
    /// (values percent-decoded), e.g. `authorization=Bearer%20abc`.
    headers: "otlp-headers", "OTEL_EXPORTER_OTLP_HEADERS", "LIST";
    /// Headers for traces; win over `--otlp-headers`.
    traces_headers: "otlp-traces-headers", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "LIST";
    /// Time limit of one export request, in milliseconds [default: 10000].
    timeout: "otlp-timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", "MS";
    /// Time limit for traces; wins over `--otlp-timeout`.
    traces_timeout: "otlp-traces-timeout", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "MS";
    /// `gzip` or `none` (default).
    compression: "otlp-compression", "OTEL_EXPORTER_OTLP_COMPRESSION", "ALGORITHM";
    /// Compression for traces; wins over `--otlp-compression`.
    traces_compression: "otlp-traces-compression", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "ALGORITHM";
    /// PEM file of CA certificates trusted for an https:// collector, in
    /// addition to the system's.
    certificate: "otlp-certificate", "OTEL_EXPORTER_OTLP_CERTIFICATE", "FILE";
    /// CA certificates for traces; win over `--otlp-certificate`.
    traces_certificate: "otlp-traces-certificate", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "FILE";
    /// Attributes added to every resource, as `key=value,key2=value2`,
    /// e.g. `deployment.environment=prod`. A traced process's own
    /// OTEL_RESOURCE_ATTRIBUTES win over these.
    resource_attributes: "resource-attributes", "OTEL_RESOURCE_ATTRIBUTES", "LIST";
    /// Longest a span waits before its batch is exported, in milliseconds
    /// [default: 5000].
    bsp_schedule_delay: "bsp-schedule-delay", "OTEL_BSP_SCHEDULE_DELAY", "MS";
    /// Longest one batch may take to export, retries included, in
    /// milliseconds; then it is dropped and counted [default: 30000].
    bsp_export_timeout: "bsp-export-timeout", "OTEL_BSP_EXPORT_TIMEOUT", "MS";
    /// Spans waiting for export at most; more are dropped and counted
    /// [default: 2048].
    bsp_max_queue_size: "bsp-max-queue-size", "OTEL_BSP_MAX_QUEUE_SIZE", "N";
    /// Spans per export request at most [default: 512].
    bsp_max_export_batch_size: "bsp-max-export-batch-size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "N";
    /// Batches exported at once (each may wait on the collector, or on
    /// its retries), at most 64 [default: 4]. More lift the spans per
    /// second a distant collector can take; 1 sends one batch at a time.
    bsp_max_concurrent_exports: "bsp-max-concurrent-exports", "OTEL_BSP_MAX_CONCURRENT_EXPORTS", "N";
    /// On SIGTERM/SIGINT, how long pending spans may take to flush, in
    /// milliseconds; what is left is dropped and counted [default: 5000].
    shutdown_timeout: "shutdown-timeout", "WIRESPAN_SHUTDOWN_TIMEOUT", "MS";
}
