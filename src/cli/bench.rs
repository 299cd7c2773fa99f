//! `vadyl bench log|invoke|audit`: the benchmarks in `vadyl::tools::bench`, with their summaries.

use super::args::BenchCommand;
use super::output::Output;

/// `store`: the `--store` database, which `bench log` measures instead of SQLite.
pub(super) fn run(out: &Output, command: BenchCommand, store: Option<&str>) -> anyhow::Result<()> {
    match command {
        BenchCommand::Invoke(opts) => {
            let report = vadyl::tools::bench::invoke::run_invoke_bench(&opts).map_err(anyhow::Error::from_boxed)?;
            out.print(&serde_json::to_value(&report)?, |_| {
                let (d, c) = (&report.declarative, &report.component);
                let languages: String = report
                    .languages
                    .iter()
                    .map(|l| {
                        format!(
                            "\n  {:<6} {:>9} bytes, compile {} ms (+{} MiB peak), cached load {} ms, instantiate median {:.0} µs (p99 {:.0}), invoke median {:.0} µs (p99 {:.0}), raw {:.0} µs (p99 {:.0}), ratio {:.2}",
                            l.language, l.component_bytes, l.compile_ms, l.compile_peak_rss_growth_mib, l.cached_load_ms,
                            l.instantiate_median_us, l.instantiate_p99_us, l.invoke_median_us, l.invoke_p99_us,
                            l.raw_median_us, l.raw_p99_us, l.ratio
                        )
                    })
                    .collect();
                format!(
                    "declarative invoke: median {:.0} µs, p99 {:.0} µs; direct call median {:.0} µs, p99 {:.0} µs; added {:.0} µs at the median ({} invocations)\n\
                     component invoke (no egress): median {:.0} µs, p99 {:.0} µs; raw wasmtime instantiate+call median {:.0} µs, p99 {:.0} µs; ratio {:.2}",
                    d.median_us, d.p99_us, d.baseline_median_us, d.baseline_p99_us, d.added_median_us, d.invocations,
                    c.median_us, c.p99_us, c.raw_median_us, c.raw_p99_us, c.ratio
                ) + "\nper guest language (refused input, no egress):" + &languages
            });
        }
        BenchCommand::Audit(opts) => {
            let report = vadyl::tools::bench::audit::run_audit_bench(&opts).map_err(anyhow::Error::from_boxed)?;
            out.print(&serde_json::to_value(&report)?, |_| report.human());
        }
        BenchCommand::Log(opts) => {
            let report = vadyl::tools::bench::log::run_log_bench(&opts, store).map_err(anyhow::Error::from_boxed)?;
            out.print(&serde_json::to_value(&report)?, |_| report.human());
        }
    }
    Ok(())
}
