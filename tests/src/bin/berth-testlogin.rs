//! Starts a shared server for benchmarks and the demo: `berth
//! login-service` and sshd (the test kit's, on a loopback port) over a
//! sandbox whose berth.toml gives the test user a login container of the
//! standard image, with /workspace and a 0700 /workspace/data; the second
//! test user logs in without berth (a plain host shell). Prints three
//! lines: the berth.toml, then the ssh command lines (login user, plain
//! user); runs until its standard input closes.

use std::io::Read;

use berth_e2e::ssh::{login_socket, LoginServer};
use berth_e2e::*;

fn main() {
    let s = Sandbox::new();
    let (uid, gid) = test_user();
    let (plain, _) = second_test_user();
    let image = s.standard_image();
    for (dir, mode) in [("homes/berth-test", 0o755), ("data/berth-test_data", 0o700)] {
        let dir = s.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    s.write_config(&format!(
        "[login]\nimage = \"{image}\"\nusers = [\"{TEST_USER}\"]\nsocket = \"{socket}\"\nidle_stop = \"1h\"\n\
         [[login.mounts]]\nsource = \"{root}/homes/{{user}}\"\ndestination = \"/workspace\"\nowned_by_user = true\n\
         [[login.mounts]]\nsource = \"{root}/data/{{user}}_data\"\ndestination = \"/workspace/data\"\nowned_by_user = true\nmode = \"0700\"\n",
        image = image.display(),
        socket = login_socket(&s).display(),
        root = s.path().display(),
    ));
    let server = LoginServer::start_with_plain(&s, &[TEST_USER], &[&plain]);
    println!("{}", s.config().display());
    println!("{}", server.ssh_command_line(TEST_USER).join(" "));
    println!("{}", server.ssh_command_line(&plain).join(" "));
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
}
