//! A full consistency check of one set's tables, used by the crash test and
//! available to an operator command: it proves that what a commit writes to
//! several tables was written all together or not at all.

use std::collections::{BTreeMap, HashMap, HashSet};

use hamirror_wire::EntryKind;
use redb::ReadTransaction;

use super::store::{HASH_PREFIX, decode_locator_value, decode_log, decode_row};
use super::{IndexError, SetTables, read_table, set_info};

pub(super) fn verify(txn: &ReadTransaction, set: &str) -> Result<Vec<String>, IndexError> {
    let names = SetTables::new(set);
    let info = set_info(txn, set)?;
    let mut problems = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();

    // Entries, and the chunk locations they imply.
    let mut expected: HashSet<(Vec<u8>, Vec<u8>, u64)> = HashSet::new();
    let mut files: HashMap<Vec<u8>, Vec<(hamirror_wire::Hash, u64)>> = HashMap::new();
    let mut paths = Vec::new();
    if let Some(t) = read_table(txn, names.files())? {
        for row in t.range::<&[u8]>(..)? {
            let (k, v) = row?;
            let path = k.value().to_vec();
            match decode_row(&path, v.value()) {
                Ok(e) => {
                    if e.kind == EntryKind::File {
                        let mut off = 0;
                        let mut list = Vec::new();
                        let mut seen = HashSet::new();
                        for c in &e.chunks {
                            if seen.insert(c.hash) {
                                expected.insert((c.hash[..HASH_PREFIX].to_vec(), path.clone(), off));
                            }
                            list.push((c.hash, off));
                            off += u64::from(c.len);
                        }
                        files.insert(path.clone(), list);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
            paths.push(path);
        }
    }
    if paths.len() as u64 != info.entries {
        problems.push(format!(
            "{} entries stored, set record says {}",
            paths.len(),
            info.entries
        ));
    }

    // Chunk locator: exactly the first occurrence of each chunk in each file.
    let mut found = HashSet::new();
    if let Some(t) = read_table(txn, names.locator())? {
        for row in t.range::<&[u8]>(..)? {
            let (k, v) = row?;
            let Some((hash, path)) = k.value().split_at_checked(HASH_PREFIX) else {
                problems.push(format!("chunk locator key of {} bytes", k.value().len()));
                continue;
            };
            let offset = decode_locator_value(v.value())?;
            let ok = files
                .get(path)
                .is_some_and(|list| list.iter().any(|(h, o)| h[..HASH_PREFIX] == *hash && *o == offset));
            if !ok {
                problems.push(format!(
                    "chunk locator points at {} offset {offset}, which does not hold that chunk",
                    show(path),
                ));
            }
            found.insert((hash.to_vec(), path.to_vec(), offset));
        }
    }
    if let Some((_, p, off)) = expected.difference(&found).next() {
        problems.push(format!(
            "{} missing chunk locations, e.g. {} offset {off}",
            expected.difference(&found).count(),
            show(p)
        ));
    }

    // Log: generations log_floor+1 ..= generation, path counts add up.
    let mut gens = BTreeMap::new();
    if let Some(t) = read_table(txn, names.log())? {
        for row in t.range::<u64>(..)? {
            let (g, record) = row?;
            match decode_log(record.value()) {
                Ok(p) => {
                    gens.insert(g.value(), p.len() as u64);
                }
                Err(e) => problems.push(format!("log of generation {}: {e}", g.value())),
            }
        }
    }
    let want: Vec<u64> = (info.log_floor + 1..=info.generation).collect();
    let have: Vec<u64> = gens.keys().copied().collect();
    if want != have {
        problems.push(format!(
            "log holds generations {:?}..{:?} ({} records), expected {}..={}",
            have.first(),
            have.last(),
            have.len(),
            info.log_floor + 1,
            info.generation
        ));
    }
    let logged: u64 = gens.values().sum();
    if logged != info.log_paths {
        problems.push(format!("log holds {logged} paths, set record says {}", info.log_paths));
    }
    Ok(problems)
}
