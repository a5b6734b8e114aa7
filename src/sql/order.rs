//! The order of rows by sort keys, as `ORDER BY` defines it: each key ascending or
//! descending, with NULLs first or last.

use std::cmp::Ordering;

use crate::types::value::Value;

/// Compares two rows of sort keys: NULLs placed by `nulls_first`, the rest by value and
/// direction.
pub fn compare_keys<'a>(
    a: &[Value],
    b: &[Value],
    specs: impl Iterator<Item = (bool, bool)> + 'a,
) -> Ordering {
    for (i, (descending, nulls_first)) in specs.enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.sort_cmp(y);
                if descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}
