//! `palisade-worker`: the worker process on its own (the `palisade` binary embeds the same
//! code). Serves the supervisor on standard input; see `palisade_worker::worker`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match palisade_worker::worker_main(palisade_worker::WorkerOptions::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("palisade-worker: {error}");
            ExitCode::from(70)
        }
    }
}
