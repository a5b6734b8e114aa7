//! Where a field is in the cluster file: its line, as serde_yaml itself sees it.
//!
//! Every error about the file names its line (DESIGN §10.2). Decoding errors get it from
//! serde_yaml. Validation errors are about values that decoded fine, and serde_yaml does not keep
//! positions in what it decodes (nor in `serde_yaml::Value`): it reports them only in errors. So
//! the locator parses the text once more with a seed that walks down a [`Field`] path, such as
//! `nodes[1].rpc_port`, and fails on purpose when it reaches that value; serde_yaml stamps the
//! error with the position of the value it was decoding, and that is the line.
//!
//! Asking the parser that decoded the file, rather than searching the text for `name: n1`, is
//! what makes the line right however the file is written: block or flow style (`- { name: n1,
//! rpc_port: 7071 }`), quoted strings, comments, the same value on two nodes. It costs one more
//! parse, and only when an error is reported.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Error;

/// One step of a [`Field`] path: a key of a mapping or an index into a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// The path of a value in the file, from the top: `replication.factor`, `nodes[2].shard`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Field(Vec<Step>);

impl Field {
    /// A key at the top of the file, or below it: `Field::at(&["sharding", "vnodes"])`.
    pub(super) fn at(keys: &[&'static str]) -> Self {
        Self(keys.iter().map(|k| Step::Key(k)).collect())
    }

    /// The field `key` of the `i`-th (0-based) entry of `nodes:`.
    pub(super) fn node(i: usize, key: &'static str) -> Self {
        Self(vec![Step::Key("nodes"), Step::Index(i), Step::Key(key)])
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if n == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line of `field` in `text`. A field that the file leaves out (it took its
/// default) is reported at the nearest enclosing value that is there, such as its node entry;
/// `None` only if `text` is not YAML at all.
pub(super) fn line_of(text: &str, field: &Field) -> Option<usize> {
    (0..=field.0.len())
        .rev()
        .find_map(|n| probe(text, &field.0[..n]))
}

/// An error about the file at `line`: `FILE:LINE: message`, or `FILE: message` when the line is
/// unknown. Bad input: the exit code is 2.
pub(super) fn error_at(path: &Path, line: Option<usize>, message: &str) -> Error {
    let file = path.display();
    Error::InvalidInput(match line {
        Some(line) => format!("{file}:{line}: {message}"),
        None => format!("{file}: {message}"),
    })
}

/// The message of the error the walk raises at its target. Any other error (the path leads
/// into a scalar, an index past the end) means the value is not there.
const FOUND: &str = "ddb-locate: found";

/// The line of the value at exactly `path`, if the file has one there.
fn probe(text: &str, path: &[Step]) -> Option<usize> {
    match Walk(path).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The seed that walks `path` down the document. It is its own visitor: the value it is given
/// is either on the way (a mapping or sequence to step into) or the target.
struct Walk<'p>(&'p [Step]);

impl Walk<'_> {
    /// Called with every scalar: the target if the path ends here, else not on the path.
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        match self.0 {
            // Failing inside serde_yaml's `deserialize_any` of this value is what stamps the
            // error with its position (an error raised after it returns would get the parent's).
            [] => Err(E::custom(FOUND)),
            _ => Ok(()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.0 {
            [] => return Err(de::Error::custom(FOUND)),
            [Step::Key(want), rest @ ..] => (*want, rest),
            [Step::Index(_), ..] => return Ok(()),
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == want {
                return map.next_value_seed(Walk(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.0 {
            [] => return Err(de::Error::custom(FOUND)),
            [Step::Index(want), rest @ ..] => (*want, rest),
            [Step::Key(_), ..] => return Ok(()),
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk(rest)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\
name: demo            # line 1
sharding:
  vnodes: 64
nodes:
  - name: n1          # line 5
    host: 127.0.0.1
    rpc_port: 7071
  # a comment between the nodes
  - name: \"n1\"
    rpc_port: 7072    # line 10
";

    #[test]
    fn block_style_values_are_found_on_their_line() {
        assert_eq!(line_of(BLOCK, &Field::at(&["name"])), Some(1));
        assert_eq!(line_of(BLOCK, &Field::at(&["sharding", "vnodes"])), Some(3));
        assert_eq!(line_of(BLOCK, &Field::node(0, "rpc_port")), Some(7));
        assert_eq!(line_of(BLOCK, &Field::node(1, "name")), Some(9));
        assert_eq!(line_of(BLOCK, &Field::node(1, "rpc_port")), Some(10));
    }

    #[test]
    fn flow_style_values_are_found_on_their_line() {
        let text = "name: x\nnodes:\n  - { name: a, rpc_port: 1 }\n  - {\n      name: b,\n      rpc_port: 2 }\n";
        assert_eq!(line_of(text, &Field::node(0, "rpc_port")), Some(3));
        assert_eq!(line_of(text, &Field::node(1, "name")), Some(5));
        assert_eq!(line_of(text, &Field::node(1, "rpc_port")), Some(6));
    }

    #[test]
    fn a_missing_value_is_reported_at_the_entry_that_would_hold_it() {
        assert_eq!(line_of(BLOCK, &Field::node(1, "host")), Some(9));
        assert_eq!(
            line_of(BLOCK, &Field::at(&["replication", "factor"])),
            Some(1)
        );
        assert_eq!(line_of(BLOCK, &Field::node(7, "host")), Some(5));
    }

    #[test]
    fn fields_print_as_paths_and_errors_name_file_and_line() {
        assert_eq!(Field::node(2, "shard").to_string(), "nodes[2].shard");
        let e = error_at(Path::new("c.yaml"), Some(3), "x: bad");
        assert_eq!(
            (e.to_string(), e.exit_code()),
            ("c.yaml:3: x: bad".into(), 2)
        );
    }
}
