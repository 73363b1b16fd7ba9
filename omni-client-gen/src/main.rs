//! `omni-client-gen --schema schema.json --out DIR [--release]`: writes `omni.js`,
//! `omni.global.js` and `omni.d.ts` for an app's schema.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use omni_client_gen::{Options, schema::Schema, write_files};

/// Generates the Omni JavaScript client and its TypeScript typings from a schema file.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The app's schema as JSON (the server serves it at `/omni/schema.json`).
    #[arg(long)]
    schema: PathBuf,
    /// Directory to write the files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Minify the JavaScript (default: readable development output).
    #[arg(long)]
    release: bool,
}

fn run(args: &Args) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(&args.schema)
        .map_err(|e| format!("cannot read {}: {e}", args.schema.display()))?;
    let schema: Schema = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a valid schema: {e}", args.schema.display()))?;
    let options = Options {
        development: !args.release,
    };
    write_files(&schema, &args.out, &options)
        .map_err(|e| format!("cannot write into {}: {e}", args.out.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("omni-client-gen: {e}");
            ExitCode::FAILURE
        }
    }
}
