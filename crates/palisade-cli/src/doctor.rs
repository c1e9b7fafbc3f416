//! `palisade doctor`: which isolation layers this host can apply, and how to enable the rest.

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Exit 0 when every layer is available, 1 when strict mode would refuse to run guests.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<u8> {
    let layers = palisade_jail::doctor();
    let ready = layers.iter().all(|layer| layer.available);
    if args.json {
        let layers: Vec<_> = layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "available": l.available, "detail": l.detail}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"strict_mode_ready": ready, "layers": layers})
        );
    } else {
        for layer in &layers {
            let mark = if layer.available { "ok  " } else { "MISS" };
            println!("{mark} {:<22} {}", layer.name, layer.detail);
        }
        if ready {
            println!("every layer is available: guests run in strict mode");
        } else {
            println!(
                "some layers are missing: strict mode refuses to run guests (use --allow-degraded to run anyway)"
            );
        }
    }
    Ok(if ready {
        exit::OK
    } else {
        exit::EXTENSION_FAILED
    })
}
