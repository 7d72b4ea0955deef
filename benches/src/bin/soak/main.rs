//! The soak: an hour (or `--minutes`) of steady traffic through the fault
//! proxy over two recovering connections, a fault every 1-3 minutes, then
//! a drain that checks every confirmed message was consumed.
//! `benches/soak.sh` drives it and holds the cluster lock; see the "Soak"
//! section of docs/reliability.md.
//!
//! ```text
//! soak run [--minutes 60] [--rate 5000] [--upstream 127.0.0.1:5781] [--node c1]
//!     [--heartbeat 3] [--every 60-180] [--quiet 150] [--seed N] [--direct yes] --out DIR
//! soak report --json FILE [--svg PATH] [--command TEXT]
//! soak proxy --upstream ADDR          (the fault proxy's child process)
//! ```
//!
//! `run` writes DIR/soak.json (everything) and DIR/timeline.csv (one line
//! a second), and prints the report.

mod faults;
mod proxy;
mod report;
mod run;
mod sys;
mod track;
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let result = match args.first().map(String::as_str) {
        Some("proxy") => match flag("--upstream") {
            Some(upstream) => proxy::serve(&upstream),
            None => Err("--upstream ADDR".into()),
        },
        Some("run") => run::Settings::from_flags(&flag).and_then(|s| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?
                .block_on(run::soak(s))
        }),
        Some("report") => report::from_file(
            flag("--json").as_deref(),
            flag("--svg").as_deref(),
            flag("--command").as_deref(),
        ),
        _ => Err("usage: soak run ... | soak report ... | soak proxy ... (see the source)".into()),
    };
    if let Err(e) = result {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}
