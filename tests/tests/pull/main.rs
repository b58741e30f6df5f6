//! Registry pulls and imports against a real registry (Debian's
//! docker-registry on loopback, images pushed with skopeo), a bearer-token
//! gate, squashfs and docker-archive files, and `berth gc`.

use berth_e2e::registry::Registry;
use berth_e2e::*;

mod files_and_gc;
mod registry;

pub fn pushed(s: &Sandbox, registry: &Registry, repo_tag: &str) -> std::path::PathBuf {
    let layout = s.standard_image();
    registry.push(&layout, repo_tag);
    layout
}

/// Points the sandbox's config at a netrc file with one login for `host`.
pub fn use_netrc(s: &Sandbox, host: &str, login: &str, password: &str) {
    let creds = s.path().join("credentials");
    std::fs::write(
        &creds,
        format!("machine {host} login {login} password {password}\n"),
    )
    .unwrap();
    s.write_config(&format!(
        "[registry]\ncredentials = [\"{}\"]\n",
        creds.display()
    ));
}
