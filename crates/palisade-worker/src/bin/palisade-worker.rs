//! `palisade-worker`: the worker process on its own (the `palisade` binary embeds the same
//! code). Serves the supervisor on standard input, or on fd 3 with `--jailed`; with
//! `__jail-launcher` it is the jail's launcher instead, so one binary serves both roles.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let jailed = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["__jail-launcher"] => palisade_jail::launcher::main(),
        [] => false,
        ["--jailed"] => true,
        _ => {
            eprintln!(
                "usage: palisade-worker [--jailed | __jail-launcher] (started by the supervisor, not by hand)"
            );
            return ExitCode::from(2);
        }
    };
    let options = palisade_worker::WorkerOptions {
        jailed,
        ..Default::default()
    };
    match palisade_worker::worker_main(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("palisade-worker: {error}");
            ExitCode::from(70)
        }
    }
}
