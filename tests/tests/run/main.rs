//! `berth run` against the real kernel, as root and as an unprivileged user:
//! isolation claims are each attacked here.

use berth_e2e::*;

mod isolation;
mod lifecycle;
mod ownership;

pub fn img(s: &Sandbox) -> String {
    s.standard_image().to_str().unwrap().to_string()
}

/// Runs the same check as root (berth --user of the test user) and rootless.
pub fn both_ways(s: &Sandbox, args: &[&str]) -> (String, String) {
    let (uid, gid) = test_user();
    let user = format!("{uid}:{gid}");
    let mut root_args = vec!["run", "--user", &user];
    root_args.extend_from_slice(args);
    let mut user_args = vec!["run"];
    user_args.extend_from_slice(args);
    (ok(s.berth(&root_args)), ok(s.berth_as_user(&user_args)))
}
