//! `hamirror completions SHELL` and the hidden `hamirror man DIR`: shell
//! completion scripts and man pages generated from the command line's own
//! definition ([`super::Cli`]), so they cannot drift from it. Packaging
//! (`.ci/package`) runs both with the built binary. Knows nothing of the
//! cluster: needs no configuration.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, EXIT_OK};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
hamirror completions bash > /etc/bash_completion.d/hamirror\n  \
hamirror completions zsh > /usr/local/share/zsh/site-functions/_hamirror\n  \
hamirror completions fish > ~/.config/fish/completions/hamirror.fish")]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write hamirror.1 and one hamirror-COMMAND.1 per command
    /// (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Writes the completion script to stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "hamirror", &mut std::io::stdout());
    Ok(EXIT_OK)
}

/// Writes the man pages and names each file written.
pub fn man(args: &ManArgs) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages to {}", args.dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("listing {}", args.dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hamirror") && n.ends_with(".1"))
        .collect();
    pages.sort();
    for p in pages {
        println!("{}", args.dir.join(p).display());
    }
    Ok(EXIT_OK)
}
