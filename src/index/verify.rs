//! A full consistency check of one set's tables, used by the crash test and
//! available to an operator command: it proves that what a commit writes to
//! several tables was written all together or not at all.

use std::collections::{BTreeMap, HashMap, HashSet};

use hamirror_wire::EntryKind;
use redb::ReadTransaction;

use super::dirs::{self, SetTables};
use super::store::{HASH_PREFIX, decode_locator_value, decode_log, decode_row};
use super::{IndexError, read_table, set_info};

pub(super) fn verify(txn: &ReadTransaction, set: &str) -> Result<Vec<String>, IndexError> {
    let names = SetTables::new(set);
    let info = set_info(txn, set)?;
    let mut problems = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();

    // Entries, and the chunk locations they imply.
    let mut expected: HashSet<(Vec<u8>, Vec<u8>, u64)> = HashSet::new();
    let mut files: HashMap<Vec<u8>, Vec<(hamirror_wire::Hash, u64)>> = HashMap::new();
    let mut paths = Vec::new();
    // Directory numbers: the two tables are each other's inverse.
    let mut dir_paths = HashMap::new();
    if let Some(t) = read_table(txn, names.dir_paths())? {
        dir_paths = dirs::dir_paths(&t)?;
    }
    let mut dir_rows: HashMap<u32, u64> = dir_paths.keys().map(|id| (*id, 0)).collect();
    let mut dir_count = 0;
    if let Some(t) = read_table(txn, names.dirs())? {
        for row in t.range::<&[u8]>(..)? {
            let (k, v) = row?;
            dir_count += 1;
            if dir_paths.get(&v.value()).map(|p| &p[..]) != Some(k.value()) {
                problems.push(format!(
                    "directory {} has number {} without its way back",
                    show(k.value()),
                    v.value()
                ));
            }
        }
    }
    if dir_count != dir_paths.len() {
        problems.push(format!(
            "{dir_count} directories by path, {} by number",
            dir_paths.len()
        ));
    }
    // The locator names files by key; file key → path.
    let mut by_key: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    if let Some(t) = read_table(txn, names.rows())? {
        for row in t.range::<&[u8]>(..)? {
            let (k, v) = row?;
            let (id, name) = dirs::split_key(k.value())?;
            let Some(dir) = dir_paths.get(&id) else {
                problems.push(format!("a row of directory number {id}, which has none"));
                continue;
            };
            *dir_rows.entry(id).or_default() += 1;
            let path = dirs::join(dir, name);
            by_key.insert(k.value().to_vec(), path.clone());
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
    for (id, n) in &dir_rows {
        if *n == 0 {
            problems.push(format!("directory number {id} kept without rows"));
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
            let Some((hash, key)) = k.value().split_at_checked(HASH_PREFIX) else {
                problems.push(format!("chunk locator key of {} bytes", k.value().len()));
                continue;
            };
            let Some(path) = by_key.get(key) else {
                problems.push(format!(
                    "chunk locator names a file key of {} bytes that has no row",
                    key.len()
                ));
                continue;
            };
            let path = &path[..];
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
