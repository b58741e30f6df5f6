//! Registry credentials from netrc-style files (enroot's `.credentials`:
//! `machine HOST login USER password SECRET`) and docker `config.json` files.

/// A login for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub login: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, ***)", self.login)
    }
}

/// The names a registry may be filed under (docker hub has several).
fn aliases(registry: &str) -> Vec<String> {
    let mut names = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" || registry == "index.docker.io" {
        names.extend(
            [
                "index.docker.io",
                "https://index.docker.io/v1/",
                "registry-1.docker.io",
            ]
            .map(String::from),
        );
    }
    names
}

/// Finds a credential for `registry` in netrc-style text; with `login`, only that user's.
pub fn from_netrc(text: &str, registry: &str, login: Option<&str>) -> Option<Credential> {
    let names = aliases(registry);
    let tokens: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect();
    let mut i = 0;
    let mut found = None;
    while i < tokens.len() {
        if tokens[i] == "machine" && i + 1 < tokens.len() {
            let machine = tokens[i + 1];
            let (mut user, mut pass) = (None, None);
            i += 2;
            while i + 1 < tokens.len() && tokens[i] != "machine" {
                match tokens[i] {
                    "login" => user = Some(tokens[i + 1]),
                    "password" => pass = Some(tokens[i + 1]),
                    _ => {}
                }
                i += 2;
            }
            if let (Some(u), Some(p)) = (user, pass) {
                if names.iter().any(|n| n == machine)
                    && login.is_none_or(|l| l == u)
                    && found.is_none()
                {
                    found = Some(Credential {
                        login: u.to_string(),
                        password: p.to_string(),
                    });
                }
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Finds a credential for `registry` in a docker `config.json`.
pub fn from_docker_config(text: &str, registry: &str, login: Option<&str>) -> Option<Credential> {
    use base64_lite::decode;
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    aliases(registry).iter().find_map(|name| {
        let entry = auths.get(name)?;
        let (u, p) = if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = String::from_utf8(decode(auth)?).ok()?;
            let (u, p) = decoded.split_once(':')?;
            (u.to_string(), p.to_string())
        } else {
            (
                entry.get("username")?.as_str()?.to_string(),
                entry.get("password")?.as_str()?.to_string(),
            )
        };
        login.is_none_or(|l| l == u).then_some(Credential {
            login: u,
            password: p,
        })
    })
}

/// Looks `registry` up in each file's text in turn (docker config.json when
/// it starts like JSON, netrc otherwise).
pub fn lookup(texts: &[String], registry: &str, login: Option<&str>) -> Option<Credential> {
    texts.iter().find_map(|text| {
        if text.trim_start().starts_with('{') {
            from_docker_config(text, registry, login)
        } else {
            from_netrc(text, registry, login)
        }
    })
}

/// A tiny standard base64 decoder (docker's `auth` field), so no crate is needed.
mod base64_lite {
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = 0u32;
        let mut bits = 0;
        for c in text.trim().bytes().filter(|&c| c != b'=') {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                _ => return None,
            } as u32;
            buf = (buf << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
                buf &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_machines() {
        let text = "machine nvcr.io login $oauthtoken password abc\n# comment\nmachine 127.0.0.1:5000\n  login alice\n  password s3cret\n";
        assert_eq!(
            from_netrc(text, "nvcr.io", None).unwrap().login,
            "$oauthtoken"
        );
        let c = from_netrc(text, "127.0.0.1:5000", Some("alice")).unwrap();
        assert_eq!(c.password, "s3cret");
        assert!(from_netrc(text, "127.0.0.1:5000", Some("bob")).is_none());
        assert!(from_netrc(text, "ghcr.io", None).is_none());
    }

    #[test]
    fn docker_config() {
        // "alice:s3cret" in base64
        let text = r#"{"auths": {"https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"}, "reg:5000": {"username": "u", "password": "p"}}}"#;
        let c = from_docker_config(text, "docker.io", None).unwrap();
        assert_eq!((c.login.as_str(), c.password.as_str()), ("alice", "s3cret"));
        assert_eq!(
            from_docker_config(text, "reg:5000", None).unwrap().password,
            "p"
        );
        assert!(from_docker_config(text, "other", None).is_none());
        assert_eq!(format!("{c:?}"), "Credential(alice, ***)");
    }
}
