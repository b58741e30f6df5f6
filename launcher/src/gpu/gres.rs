//! Where Slurm's GPU indexes point: the `File=` entries of the node's
//! `Name=gpu` lines in gres.conf, in order (Slurm's global GPU index is the
//! position in that list), with Slurm's bracket ranges expanded.

use std::path::PathBuf;

/// gres.conf beside slurm.conf: in `$SLURM_CONF`'s directory, else /etc/slurm.
pub fn conf_path() -> PathBuf {
    crate::slurm::files::path("gres.conf")
}

/// The GPU device files gres.conf lists for `node`, in index order.
pub fn gpu_files(text: &str, node: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let fields: Vec<(String, &str)> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        if get("name") != Some("gpu") {
            continue;
        }
        if let Some(nodes) = get("nodename") {
            if !expand(nodes).iter().any(|n| n == node) {
                continue;
            }
        }
        if let Some(file) = get("file") {
            files.extend(expand(file).into_iter().map(PathBuf::from));
        }
    }
    files
}

/// Expands a Slurm host or file list: `a[0-2,5],b` -> a0 a1 a2 a5 b, keeping
/// zero padding (`n[01-03]` -> n01 n02 n03).
pub fn expand(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in split_top_level(list) {
        expand_item(item, &mut out);
    }
    out
}

fn split_top_level(list: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn expand_item(item: &str, out: &mut Vec<String>) {
    let (Some(open), Some(close)) = (item.find('['), item.find(']')) else {
        out.push(item.to_string());
        return;
    };
    if close < open {
        out.push(item.to_string());
        return;
    }
    let (prefix, ranges, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    for range in ranges.split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (Ok(a), Ok(b)) = (lo.parse::<u64>(), hi.parse::<u64>()) else {
            out.push(item.to_string());
            return;
        };
        for n in a..=b {
            expand_item(&format!("{prefix}{n:0width$}{rest}", width = lo.len()), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(
            expand("/dev/nvidia[0-2]"),
            ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2"]
        );
        assert_eq!(expand("n[01-02,7],login"), ["n01", "n02", "n7", "login"]);
        assert_eq!(
            expand("/dev/nvidia0,/dev/nvidia3"),
            ["/dev/nvidia0", "/dev/nvidia3"]
        );
        assert_eq!(expand("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
    }

    #[test]
    fn takes_this_nodes_gpu_lines_in_order() {
        let conf = "# comment\nAutoDetect=off\n\
                    NodeName=gpu[01-02] Name=gpu Type=a100 File=/dev/nvidia[0-1]\n\
                    NodeName=gpu02 Name=gpu Type=t4 File=/dev/nvidia2  # more\n\
                    NodeName=other Name=gpu File=/dev/nvidia[0-7]\n\
                    Name=mps Count=100\n";
        assert_eq!(
            gpu_files(conf, "gpu02"),
            ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2"].map(PathBuf::from)
        );
        assert_eq!(gpu_files(conf, "gpu01").len(), 2);
        assert!(gpu_files(conf, "login").is_empty());
        assert_eq!(gpu_files("Name=gpu File=/dev/nvidia[0-3]", "any").len(), 4);
    }
}
