//! Pull progress: a bar per layer on a terminal (indicatif), one summary line
//! on stderr otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use berth::image::records::ImageRecord;
use berth::image::registry::PullProgress;

/// Reports one pull.
pub(crate) struct PullReporter {
    name: String,
    quiet: bool,
    started: Instant,
    bars: Mutex<Vec<ProgressBar>>,
    multi: Option<MultiProgress>,
    bytes: AtomicU64,
    cached: AtomicU64,
}

impl PullReporter {
    pub(crate) fn new(name: String, quiet: bool) -> PullReporter {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        PullReporter {
            name,
            quiet,
            started: Instant::now(),
            bars: Mutex::new(vec![]),
            multi,
            bytes: AtomicU64::new(0),
            cached: AtomicU64::new(0),
        }
    }

    /// Prints the summary line.
    pub(crate) fn finish(&self, record: &ImageRecord) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
        if self.quiet {
            return;
        }
        let mb = self.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
        eprintln!(
            "pulled {}: {} layers ({} cached), {mb:.1} MiB in {:.1} s",
            record.name,
            record.layers.len(),
            self.cached.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64()
        );
    }

    fn bar(&self, index: usize, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(index).cloned()) {
            f(&bar);
        }
    }
}

impl PullProgress for PullReporter {
    fn layers(&self, layers: &[(String, u64, bool)]) {
        self.cached.store(
            layers.iter().filter(|l| l.2).count() as u64,
            Ordering::Relaxed,
        );
        let Some(multi) = &self.multi else { return };
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for (digest, size, cached) in layers {
            let bar = multi.add(ProgressBar::new(*size).with_style(style.clone()));
            bar.set_prefix(
                digest.strip_prefix("sha256:").unwrap_or(digest)[..12.min(digest.len())]
                    .to_string(),
            );
            if *cached {
                bar.set_position(*size);
                bar.finish_with_message("cached");
            }
            bars.push(bar);
        }
        let _ = &self.name;
    }

    fn downloaded(&self, index: usize, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.bar(index, |b| b.inc(n));
    }

    fn extracting(&self, index: usize) {
        self.bar(index, |b| b.set_message("extracting"));
    }

    fn done(&self, index: usize) {
        self.bar(index, |b| b.finish_with_message("done"));
    }
}
