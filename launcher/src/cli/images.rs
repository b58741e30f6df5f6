//! The store verbs: `pull`, `import`, `images`, `rm`, `gc`, and image
//! resolution for `run` (pull or import on first use).

use std::path::PathBuf;

use anyhow::{bail, Result};

use berth::image::records::{self, ImageRecord};
use berth::image::registry::{self, PullOptions};
use berth::image::{archive, layout, squashfs, ImageRef, ImageSource};
use berth::spec::build::Credentials;

use super::progress::PullReporter;
use super::Context;

#[derive(clap::Args, Debug)]
pub(crate) struct PullArgs {
    /// `[REGISTRY/]REPO[:TAG][@DIGEST]` or pyxis's `[USER@][REGISTRY#]IMAGE[:TAG]`.
    image: String,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ImportArgs {
    /// An OCI layout directory, a docker-archive tar or a squashfs file.
    path: PathBuf,
    /// The name to run it by [default: the archive's tag, or the path].
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RmArgs {
    /// Image names as `berth images` shows them (or as given to pull).
    #[arg(required_unless_present = "container", conflicts_with = "container")]
    images: Vec<String>,
    /// Remove this named container instead (root only; see `berth ps`).
    #[arg(long, value_name = "NAME")]
    container: Option<String>,
    /// Whose named container it is (with --container).
    #[arg(long, value_name = "NAME|UID", requires = "container")]
    user: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct GcArgs {
    /// Shrink the store to this size (e.g. 50G) [default: store.max_size].
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
}

fn pull_options(ctx: &Context, whose: Credentials) -> PullOptions {
    let user_files = |home: &std::path::Path| {
        [
            home.join(".config/enroot/.credentials"),
            home.join(".docker/config.json"),
        ]
    };
    let mut texts = Vec::new();
    match whose {
        Credentials::Caller => {
            if let Some(home) = std::env::var_os("HOME") {
                texts.extend(
                    user_files(std::path::Path::new(&home))
                        .iter()
                        .filter_map(|f| std::fs::read_to_string(f).ok()),
                );
            }
        }
        Credentials::User(uid, gid) => {
            if let Some(user) = nix::unistd::User::from_uid(uid.into()).ok().flatten() {
                texts.extend(
                    user_files(&user.dir)
                        .iter()
                        .filter_map(|f| berth::as_user::read_as_user(f, uid, gid)),
                );
            }
        }
    }
    texts.extend(
        ctx.config
            .registry
            .credentials
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok()),
    );
    PullOptions {
        insecure: ctx.config.registry.insecure.clone(),
        credentials: texts,
        parallel: ctx.config.registry.parallel_downloads,
        holder: holder(whose),
        mirrors: ctx.config.registry.mirrors.clone(),
    }
}

/// Who pulls, as records and layer facts name them: `uid N`.
fn holder(whose: Credentials) -> String {
    match whose {
        Credentials::Caller => format!("uid {}", nix::unistd::getuid()),
        Credentials::User(uid, _) => format!("uid {uid}"),
    }
}

fn pull_reference(
    ctx: &Context,
    reference: &ImageRef,
    whose: Credentials,
) -> Result<ImageRecord, berth::image::ImageError> {
    let reporter = PullReporter::new(reference.to_string(), ctx.quiet);
    let record = registry::pull(&ctx.store, reference, &pull_options(ctx, whose), &reporter)?;
    reporter.finish(&record);
    Ok(record)
}

/// The registry as `berth` reaches it for one user: their credentials, the
/// progress display, the remembered access checks.
struct RegistryFor<'a> {
    ctx: &'a Context,
    whose: Credentials,
}

impl berth::image::ImageRegistry for RegistryFor<'_> {
    fn pull(&self, reference: &ImageRef) -> Result<ImageRecord, berth::image::ImageError> {
        let record = pull_reference(self.ctx, reference, self.whose)?;
        if let Credentials::User(uid, _) = self.whose {
            remember_access(self.ctx, uid, &record.name);
        }
        Ok(record)
    }

    fn may_use(&self, record: &ImageRecord) -> Result<bool, berth::image::ImageError> {
        match self.whose {
            Credentials::Caller => Ok(true),
            Credentials::User(uid, gid) => check_access(self.ctx, record, uid, gid),
        }
    }

    fn puller(&self) -> String {
        holder(self.whose)
    }
}

/// The registry as each user reaches it, for the spec builder.
impl berth::spec::build::Registries for Context {
    fn for_user(&self, whose: Credentials) -> Box<dyn berth::image::ImageRegistry + '_> {
        Box::new(RegistryFor { ctx: self, whose })
    }
}

/// Private registry images stay private on a shared node: before a user
/// starts one from the cache, the registry is asked (one manifest request
/// with the user's own credentials) whether they may pull it. A yes is
/// remembered for `registry.auth_cache`.
fn check_access(
    ctx: &Context,
    record: &ImageRecord,
    uid: u32,
    gid: u32,
) -> Result<bool, berth::image::ImageError> {
    let stamp = ctx.store.access_stamp(uid, &record.name);
    let ttl = slurm_conf::parse_duration(&ctx.config.registry.auth_cache).unwrap_or(0);
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < ttl);
    if fresh {
        return Ok(true);
    }
    let reference = ImageRef::parse(&record.name)?;
    match registry::check_access(&reference, &pull_options(ctx, Credentials::User(uid, gid))) {
        // Only for the image cached: a name the registry now gives another
        // image is pulled again (with this user's credentials).
        Ok(digest) if Some(&digest) == record.manifest_digest.as_ref() => {
            remember_access(ctx, uid, &record.name);
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) => Err(berth::image::ImageError::Invalid {
            image: record.name.clone(),
            message: format!(
                "a private image in this node's cache; uid {uid} must be able to pull it to use it, \
                 and the registry was asked: {}",
                match e {
                    berth::image::ImageError::Invalid { message, .. } => message,
                    other => other.to_string(),
                }
            ),
        }),
    }
}

/// Notes that `uid` just showed it may pull the image `name`.
fn remember_access(ctx: &Context, uid: u32, name: &str) {
    let stamp = ctx.store.access_stamp(uid, name);
    if let Err(e) = std::fs::write(&stamp, b"") {
        tracing::debug!(path = %stamp.display(), error = %e, "cannot remember an access check");
    }
}

pub(crate) fn pull(ctx: &Context, args: &PullArgs) -> Result<i32> {
    let reference = ImageRef::parse(&args.image)?;
    pull_reference(ctx, &reference, Credentials::Caller)?;
    Ok(0)
}

pub(crate) fn import(ctx: &Context, args: &ImportArgs) -> Result<i32> {
    let shown = args.path.display().to_string();
    let record = match ImageSource::parse(&shown, None)? {
        ImageSource::OciLayout(dir) => layout::Layout::new(&dir).import(&ctx.store, args.name.as_deref().unwrap_or(&shown))?,
        ImageSource::DockerArchive(file) => archive::import(&ctx.store, &file, args.name.as_deref())?,
        ImageSource::Squashfs(file) => squashfs::import(&ctx.store, &file, args.name.as_deref(), ctx.config.security.allow_setuid)?,
        ImageSource::RootfsDir(_) => bail!("{shown}: a root filesystem directory is run in place (`berth run {shown}`), not imported"),
        ImageSource::Named(_) => bail!("{shown}: no such file or directory (use `berth pull` for registry images)"),
    };
    if !ctx.quiet {
        println!("{}", record.name);
    }
    Ok(0)
}

/// `bytes` in B, KiB, MiB... with one decimal.
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

pub(crate) fn list(ctx: &Context) -> Result<i32> {
    println!(
        "{:<60} {:<14} {:>6} {:>10}  SOURCE",
        "NAME", "ID", "LAYERS", "SIZE"
    );
    for record in records::list(&ctx.store) {
        let size: u64 = record
            .layers
            .iter()
            .map(|d| ctx.store.layer_meta(d).bytes)
            .sum();
        let id = record.id.strip_prefix("sha256:").unwrap_or(&record.id);
        println!(
            "{:<60} {:<14} {:>6} {:>10}  {}",
            record.name,
            &id[..12.min(id.len())],
            record.layers.len(),
            human(size),
            record.source
        );
    }
    Ok(0)
}

pub(crate) fn rm(ctx: &Context, args: &RmArgs) -> Result<i32> {
    if let Some(name) = &args.container {
        return super::containers::rm(ctx, name, args.user.as_deref());
    }
    let mut missing = Vec::new();
    for name in &args.images {
        let removed = ImageSource::record_names(name)
            .iter()
            .map(|n| records::remove(&ctx.store, n))
            .collect::<Result<Vec<bool>, _>>()?;
        if !removed.contains(&true) {
            missing.push(name.as_str());
        }
    }
    if !missing.is_empty() {
        bail!(
            "no such image in the store: {} (see `berth images`)",
            missing.join(", ")
        );
    }
    Ok(0)
}

pub(crate) fn gc(ctx: &Context, args: &GcArgs) -> Result<i32> {
    let limit_text = args
        .max_size
        .as_deref()
        .unwrap_or(&ctx.config.store.max_size);
    let limit =
        slurm_conf::parse_size(limit_text).map_err(|e| anyhow::anyhow!("--max-size: {e}"))?;
    let containers = super::containers::gc(ctx)?;
    let report = berth::image::gc::collect(&ctx.store, limit)?;
    if !ctx.quiet {
        println!("{}", gc_summary(&report, containers.as_ref()));
    }
    Ok(0)
}

/// `berth gc`'s one line: layers and images first (scripts read that
/// start), then named containers.
fn gc_summary(
    report: &berth::image::gc::GcReport,
    containers: Option<&berth::image::gc::ContainersReport>,
) -> String {
    let mut kept = Vec::new();
    if report.layers_in_use > 0 {
        kept.push(format!(
            "{} layers kept: in use by running containers",
            report.layers_in_use
        ));
    }
    if report.layers_of_named > 0 {
        kept.push(format!(
            "{} layers kept: named containers are made of them",
            report.layers_of_named
        ));
    }
    let mut line = format!(
        "removed {} layers and {} images, freed {}; {} left",
        report.layers_removed,
        report.images_removed.len(),
        human(report.bytes_freed),
        human(report.bytes_left),
    );
    if !kept.is_empty() {
        line.push_str(&format!(" ({})", kept.join("; ")));
    }
    if let Some(c) = containers {
        line.push_str(&format!(
            "; removed {} named containers, freed {}",
            c.removed.len(),
            human(c.bytes_freed)
        ));
    }
    line
}
