//! Where a node's data directory is: `data_dir:` of the node, else `defaults.data_dir` with
//! `{name}` replaced by the node name, else `./ddb-data/{name}`; a relative path is relative to
//! the cluster file's directory.
//!
//! The path is normalised lexically (`.` dropped, `a/..` folded), without touching the file
//! system (the directory need not exist yet, and may be on another host), so that validation
//! sees `./ddb-data/n1` and `ddb-data/x/../n1` as one directory. Settings and validation both
//! take the directory from here, so the one that is checked is the one that is used.

use std::path::{Component, Path, PathBuf};

use super::decode::RawFile;

/// Where a node's data goes when neither it nor `defaults.data_dir` says.
const DEFAULT_DATA_DIR: &str = "./ddb-data/{name}";

/// The data directory of the `i`-th node of `file`, read from `path`.
pub(super) fn data_dir(file: &RawFile, i: usize, path: &Path) -> PathBuf {
    let node = &file.nodes[i];
    let dir = match &node.data_dir {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            file.defaults
                .data_dir
                .as_deref()
                .unwrap_or(DEFAULT_DATA_DIR)
                .replace("{name}", &node.name),
        ),
    };
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.is_absolute() {
        normalise(&dir)
    } else {
        normalise(&base.join(dir))
    }
}

/// `path` with `.` components dropped and `x/..` folded; a leading `..` (or `..` past the root)
/// is kept as it is, since only the file system could say where it leads.
fn normalise(path: &Path) -> PathBuf {
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_folded_without_the_file_system() {
        assert_eq!(normalise(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalise(Path::new("./x/y/..")), PathBuf::from("x"));
        assert_eq!(normalise(Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(normalise(Path::new("/../x")), PathBuf::from("/x"));
        assert_eq!(normalise(Path::new("./")), PathBuf::from("."));
    }
}
