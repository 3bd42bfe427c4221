//! Exclude rules of a mirror set: the `- PATTERN` and `+ PATTERN` lines of
//! an `F` file, parsed, and matched against set paths with rsync's
//! semantics (rsync(1), "FILTER RULES" / "PATTERN MATCHING RULES"). Pure
//! logic on byte strings: no filesystem, no clock.
//!
//! Set paths are relative to `/` (`var/lib/samba/x`), exactly as rsync sees
//! names when the transfer root is `/`: so an anchored pattern
//! (`/var/lib/samba/cache/`) is an absolute path, and the same pattern given
//! to `rsync --exclude` over the node's root matches the same paths (the
//! integration tests use rsync as the oracle for this).
//!
//! * `*` matches within one component, `**` across components, `?` one
//!   character but `/`, `[...]` a class (`[!...]`/`[^...]` negated, ranges,
//!   `[:alpha:]` …); `\` escapes a wildcard.
//! * No `/` (other than a trailing one) and no `**`: matched against the last
//!   component, at any depth. With an inner `/`: the last N+1 components (N
//!   slashes). With `**` (not leading): any tail starting at a component.
//!   Leading `/`: the whole path from the top.
//! * A trailing `/` matches directories only; `dir/***` matches `dir` and
//!   everything below it.
//! * Rules are tried in file order and the first match decides (`+` keeps,
//!   `-` excludes); no match keeps. An excluded directory is not entered, so
//!   everything below it is excluded too, whatever the later rules say.
//!
//! Only paths of the set (its roots and what they contain) are ever
//! tested: the directories above a root are not.

use std::fmt;

/// One `+`/`-` line of an `F` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `+`: a match keeps the path (an exception to a later `-`).
    pub include: bool,
    /// The pattern as written (after the `- `).
    pub text: String,
    pub line: usize,
    /// The pattern without its leading and trailing `/`.
    pat: Vec<u8>,
    anchored: bool,
    dir_only: bool,
    /// Slashes inside `pat`.
    slashes: usize,
    /// Holds `*`, `?` or `[`: matched by [`wildmatch`], else literally.
    wild: bool,
    /// Holds `**`.
    wild2: bool,
    /// Starts with `**`.
    wild2_prefix: bool,
    /// Ends with `/***`.
    wild3_suffix: bool,
}

/// A set's rules, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excludes {
    pub rules: Vec<Rule>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", if self.include { '+' } else { '-' }, self.text)
    }
}

impl Rule {
    /// Parses the pattern of a `-` (or `+`) line.
    ///
    /// # Errors
    /// What is wrong and what was expected, for `FILE:LINE: …`.
    pub fn parse(include: bool, text: &str, line: usize) -> Result<Rule, String> {
        let sign = if include { '+' } else { '-' };
        if text.is_empty() {
            return Err(format!("expected a pattern after `{sign} `"));
        }
        let anchored = text.starts_with('/');
        let body = text.strip_prefix('/').unwrap_or(text);
        let dir_only = body.ends_with('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Err(format!(
                "`{sign} {text}` would match every path; expected a pattern naming what to exclude"
            ));
        }
        if body.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(format!(
                "`{text}` has an empty, `.` or `..` component and could never match; expected a plain pattern like `*.tmp`, `cache/` or `/var/lib/x/`"
            ));
        }
        check_brackets(body.as_bytes()).map_err(|why| format!("`{text}`: {why}"))?;
        let pat = body.as_bytes().to_vec();
        Ok(Rule {
            include,
            text: text.to_string(),
            line,
            slashes: pat.iter().filter(|&&b| b == b'/').count(),
            wild: pat.iter().any(|b| b"*?[".contains(b)),
            wild2: pat.windows(2).any(|w| w == b"**"),
            wild2_prefix: pat.starts_with(b"**"),
            wild3_suffix: pat.ends_with(b"/***"),
            anchored,
            dir_only,
            pat,
        })
    }

    /// Whether the pattern is anchored (`/…`): matched against the whole
    /// absolute path.
    pub fn anchored(&self) -> bool {
        self.anchored
    }

    /// Whether this rule matches `path` (a set path, no leading `/`) of the
    /// given kind. Ancestors are not looked at.
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        if path.is_empty() || (self.dir_only && !is_dir) {
            return false;
        }
        let mut name = path;
        if !self.anchored && self.slashes == 0 && !self.wild2 {
            name = last_component(path);
        }
        let mut text = Vec::with_capacity(name.len() + 2);
        if self.wild2_prefix && !self.anchored {
            // "**/foo" matches a top-level "foo" too.
            text.push(b'/');
        }
        text.extend_from_slice(name);
        if is_dir && self.wild3_suffix {
            // "dir/***" matches "dir" itself.
            text.push(b'/');
        }
        if !self.wild {
            return self.literal(&text);
        }
        if !self.anchored && self.slashes > 0 && !self.wild2 {
            return wildmatch(&self.pat, trailing(&text, self.slashes + 1)) == Match::True;
        }
        let m = wildmatch(&self.pat, &text);
        if m == Match::True {
            return true;
        }
        if !self.anchored && self.wild2 && !self.wild2_prefix && m != Match::AbortAll {
            // Try after every slash.
            for (i, _) in text.iter().enumerate().filter(|(_, b)| **b == b'/') {
                match wildmatch(&self.pat, &text[i + 1..]) {
                    Match::True => return true,
                    Match::AbortAll => return false,
                    _ => {}
                }
            }
        }
        false
    }

    fn literal(&self, text: &[u8]) -> bool {
        if self.anchored {
            return text == self.pat.as_slice();
        }
        let tail = trailing(text, self.slashes + 1);
        tail == self.pat.as_slice()
    }
}

impl Excludes {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the first rule matching `path` itself excludes it (its
    /// ancestors are not looked at: a walk that did not enter an excluded
    /// directory asks this of each name it lists).
    pub fn excludes_name(&self, path: &[u8], is_dir: bool) -> bool {
        self.rules
            .iter()
            .find(|r| r.matches(path, is_dir))
            .is_some_and(|r| !r.include)
    }

    /// Whether `path` is excluded, itself or through a directory above it
    /// that is excluded — counting only the directories from `top` (a set
    /// path: the path's root) down. `is_dir: None` when the kind is not
    /// known (a path that is gone): excluded if it would be as either kind,
    /// the side that keeps a replica's file rather than deleting it.
    pub fn excludes_below(&self, top: &[u8], path: &[u8], is_dir: Option<bool>) -> bool {
        if self.rules.is_empty() || !(path == top || (path.starts_with(top) && path.get(top.len()) == Some(&b'/'))) {
            return false;
        }
        let mut i = top.len();
        while i < path.len() {
            if self.excludes_name(&path[..i], true) {
                return true;
            }
            i += 1 + path[i + 1..]
                .iter()
                .position(|b| *b == b'/')
                .unwrap_or(path.len() - i - 1);
        }
        match is_dir {
            Some(d) => self.excludes_name(path, d),
            None => self.excludes_name(path, false) || self.excludes_name(path, true),
        }
    }
}

impl super::MirrorSet {
    /// Whether this set's rules exclude `path` (a set path): itself or a
    /// directory above it, from its root down (see
    /// [`Excludes::excludes_below`]). A path under no root: `false`.
    pub fn excluded(&self, path: &[u8], is_dir: Option<bool>) -> bool {
        use std::os::unix::ffi::OsStrExt;
        if self.excludes.is_empty() {
            return false;
        }
        self.roots.iter().any(|r| {
            let top = r.path.as_os_str().as_bytes();
            let top = top.strip_prefix(b"/").unwrap_or(top);
            self.excludes.excludes_below(top, path, is_dir)
        })
    }
}

impl Rule {
    /// Whether this anchored rule can match nothing in `roots` (set paths,
    /// with whether each is a directory): its fixed leading components lead
    /// outside every root, or it names a directory above a root. Unanchored
    /// rules depend on what the roots hold: `false`.
    pub fn outside(&self, roots: &[(&[u8], bool)]) -> bool {
        if !self.anchored {
            return false;
        }
        let pat: Vec<&[u8]> = self.pat.split(|b| *b == b'/').collect();
        let comp = |p: &[u8], name: &[u8]| {
            if self.wild {
                wildmatch(p, name) == Match::True
            } else {
                p == name
            }
        };
        !roots.iter().any(|&(root, dir)| {
            let names: Vec<&[u8]> = root.split(|b| *b == b'/').collect();
            match pat.iter().position(|c| c.windows(2).any(|w| w == b"**")) {
                // Below a `**` anything may follow.
                Some(k) => pat[..k].iter().zip(&names).all(|(p, n)| comp(p, n)),
                None => {
                    pat.len() >= names.len()
                        && (dir || pat.len() == names.len())
                        && pat.iter().zip(&names).all(|(p, n)| comp(p, n))
                }
            }
        })
    }
}

impl Excludes {
    /// Warnings about rules that do nothing or too much for a set with
    /// these `roots` (set paths, with whether each is a directory), as
    /// (line, message): an anchored rule outside every root, and a rule
    /// that excludes a whole root.
    pub fn warnings(&self, roots: &[(&[u8], bool, usize)]) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let plain: Vec<(&[u8], bool)> = roots.iter().map(|&(p, d, _)| (p, d)).collect();
        for r in &self.rules {
            if r.outside(&plain) {
                out.push((
                    r.line,
                    format!(
                        "`{r}` can never match: it names no path inside the set's roots (an anchored pattern is an absolute path, like `- /var/lib/samba/cache/`)"
                    ),
                ));
            }
        }
        for &(root, dir, line) in roots {
            if let Some(r) = self.rules.iter().find(|r| r.matches(root, dir)).filter(|r| !r.include) {
                out.push((
                    r.line,
                    format!(
                        "`{r}` excludes the root /{}{} (line {line}) as a whole: nothing of it is mirrored",
                        String::from_utf8_lossy(root),
                        if dir { "/" } else { "" }
                    ),
                ));
            }
        }
        out.sort();
        out
    }
}

fn last_component(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// The last `n` components of `text` (all of it when it has fewer).
fn trailing(text: &[u8], n: usize) -> &[u8] {
    let mut seen = 0;
    for (i, b) in text.iter().enumerate().rev() {
        if *b == b'/' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// Every `[` opens a class that is closed, and no pattern ends in a lone `\`.
fn check_brackets(p: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 == p.len() => return Err("ends with a lone `\\`; expected a character after it".into()),
            b'\\' => i += 2,
            b'[' => {
                let mut j = i + 1;
                if j < p.len() && (p[j] == b'!' || p[j] == b'^') {
                    j += 1;
                }
                // A `]` right after the opening is a member, not the end.
                if j < p.len() && p[j] == b']' {
                    j += 1;
                }
                loop {
                    match p.get(j) {
                        None => {
                            return Err(
                                "a `[` class is not closed; expected `]` (write `\\[` for a literal `[`)".into(),
                            );
                        }
                        Some(b']') => break,
                        Some(b'\\') => j += 2,
                        Some(b'[') if p.get(j + 1) == Some(&b':') => {
                            let end = p[j + 2..].windows(2).position(|w| w == b":]");
                            match end {
                                Some(e) if class(&p[j + 2..j + 2 + e]).is_some() => j += 2 + e + 2,
                                _ => return Err("unknown `[:class:]`; expected one of alnum, alpha, blank, cntrl, digit, graph, lower, print, punct, space, upper, xdigit".into()),
                            }
                        }
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// A named class (`alpha` of `[:alpha:]`) as a test on a byte.
fn class(name: &[u8]) -> Option<fn(&u8) -> bool> {
    Some(match name {
        b"alnum" => u8::is_ascii_alphanumeric,
        b"alpha" => u8::is_ascii_alphabetic,
        b"blank" => |c: &u8| *c == b' ' || *c == b'\t',
        b"cntrl" => u8::is_ascii_control,
        b"digit" => u8::is_ascii_digit,
        b"graph" => u8::is_ascii_graphic,
        b"lower" => u8::is_ascii_lowercase,
        b"print" => |c: &u8| c.is_ascii_graphic() || *c == b' ',
        b"punct" => u8::is_ascii_punctuation,
        b"space" => u8::is_ascii_whitespace,
        b"upper" => u8::is_ascii_uppercase,
        b"xdigit" => u8::is_ascii_hexdigit,
        _ => return None,
    })
}

/// rsync's (and git's) wildmatch results: besides a plain miss, the two
/// aborts cut the backtracking short (no pattern makes it exponential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    True,
    False,
    AbortAll,
    AbortToStarStar,
}

/// rsync's `dowild`: `pat` against the whole of `text`.
fn wildmatch(pat: &[u8], text: &[u8]) -> Match {
    let (mut p, mut t) = (0, 0);
    while p < pat.len() {
        let pc = pat[p];
        if t >= text.len() && pc != b'*' {
            return Match::AbortAll;
        }
        match pc {
            b'\\' => {
                p += 1;
                if pat.get(p) != Some(&text[t]) {
                    return Match::False;
                }
            }
            b'?' => {
                if text[t] == b'/' {
                    return Match::False;
                }
            }
            b'*' => {
                p += 1;
                let special = pat.get(p) == Some(&b'*');
                while pat.get(p) == Some(&b'*') {
                    p += 1;
                }
                if p == pat.len() {
                    // A trailing `*` does not cross a `/`, `**` does.
                    return if !special && text[t..].contains(&b'/') {
                        Match::False
                    } else {
                        Match::True
                    };
                }
                while t < text.len() {
                    let m = wildmatch(&pat[p..], &text[t..]);
                    if m != Match::False {
                        if !special || m != Match::AbortToStarStar {
                            return m;
                        }
                    } else if !special && text[t] == b'/' {
                        return Match::AbortToStarStar;
                    }
                    t += 1;
                }
                return Match::AbortAll;
            }
            b'[' => {
                let c = text[t];
                p += 1;
                let negated = matches!(pat.get(p), Some(b'!' | b'^'));
                if negated {
                    p += 1;
                }
                let mut matched = false;
                let mut prev: Option<u8> = None;
                let mut first = true;
                loop {
                    let Some(&pc) = pat.get(p) else {
                        return Match::AbortAll;
                    };
                    if pc == b']' && !first {
                        break;
                    }
                    first = false;
                    if pc == b'\\' {
                        p += 1;
                        let Some(&e) = pat.get(p) else {
                            return Match::AbortAll;
                        };
                        matched |= c == e;
                        prev = Some(e);
                    } else if pc == b'-' && prev.is_some() && pat.get(p + 1).is_some_and(|n| *n != b']') {
                        p += 1;
                        let mut hi = pat[p];
                        if hi == b'\\' {
                            p += 1;
                            let Some(&e) = pat.get(p) else {
                                return Match::AbortAll;
                            };
                            hi = e;
                        }
                        let lo = prev.unwrap_or(0);
                        matched |= lo <= c && c <= hi;
                        prev = None;
                    } else if pc == b'[' && pat.get(p + 1) == Some(&b':') {
                        let end = pat[p + 2..].windows(2).position(|w| w == b":]");
                        let Some(test) = end.and_then(|e| class(&pat[p + 2..p + 2 + e])) else {
                            return Match::AbortAll;
                        };
                        matched |= test(&c);
                        p += 2 + end.unwrap_or(0) + 1;
                        prev = None;
                    } else {
                        matched |= c == pc;
                        prev = Some(pc);
                    }
                    p += 1;
                }
                if matched == negated || c == b'/' {
                    return Match::False;
                }
            }
            _ => {
                if text[t] != pc {
                    return Match::False;
                }
            }
        }
        p += 1;
        t += 1;
    }
    if t == text.len() { Match::True } else { Match::False }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        Rule::parse(false, s, 1).unwrap()
    }

    /// (pattern, path, is a directory, matches)
    const TABLE: &[(&str, &str, bool, bool)] = &[
        // No slash: the last component, at any depth.
        ("*.tmp", "var/lib/samba/a.tmp", false, true),
        ("*.tmp", "var/lib/samba/d/a.tmp", false, true),
        ("*.tmp", "var/lib/samba/a.tmpx", false, false),
        ("*.tmp", "var/lib/x.tmp/a", false, false),
        ("a?c", "srv/abc", false, true),
        ("a?c", "srv/ac", false, false),
        ("lock", "srv/d/lock", true, true),
        ("lock", "srv/d/lock", false, true),
        ("lock", "srv/d/xlock", false, false),
        // Trailing slash: directories only.
        ("lock/", "srv/d/lock", true, true),
        ("lock/", "srv/d/lock", false, false),
        // Anchored: the whole path from the top.
        ("/var/lib/samba/cache/", "var/lib/samba/cache", true, true),
        ("/var/lib/samba/cache/", "var/lib/samba/cache", false, false),
        ("/var/lib/samba/cache/", "x/var/lib/samba/cache", true, false),
        ("/srv/*.log", "srv/a.log", false, true),
        ("/srv/*.log", "srv/d/a.log", false, false),
        ("/srv/a", "srv/a", false, true),
        ("/srv/a", "srv/b/srv/a", false, false),
        // Inner slash, unanchored: the last N+1 components.
        ("d/*.log", "srv/d/a.log", false, true),
        ("d/*.log", "srv/x/d/a.log", false, true),
        ("d/*.log", "srv/xd/a.log", false, false),
        ("samba/cache", "var/lib/samba/cache", true, true),
        ("samba/cache", "var/lib/xsamba/cache", true, false),
        // `**` crosses components; `*` does not.
        ("**/*.swp", "srv/a.swp", false, true),
        ("**/*.swp", "srv/d/e/a.swp", false, true),
        ("/srv/**.swp", "srv/d/e/a.swp", false, true),
        ("/srv/*.swp", "srv/d/a.swp", false, false),
        ("a/**/b", "srv/a/x/b", true, true),
        ("a/**/b", "srv/a/b", true, false),
        ("**/b", "b", true, true),
        ("/srv/d/***", "srv/d", true, true),
        ("/srv/d/***", "srv/d/e/f", false, true),
        ("/srv/d/***", "srv/dx", true, false),
        // Classes.
        ("[ab]*", "srv/apple", false, true),
        ("[!ab]*", "srv/apple", false, false),
        ("[^ab]*", "srv/cherry", false, true),
        ("file[0-9]", "srv/file7", false, true),
        ("file[0-9]", "srv/filex", false, false),
        ("[[:digit:]]*", "srv/1x", false, true),
        ("[]x]", "srv/]", false, true),
        ("x[/]y", "srv/x/y", false, false),
        // Escapes, and a literal pattern takes `\` literally (as rsync).
        ("\\*.tmp", "srv/*.tmp", false, true),
        ("\\*.tmp", "srv/a.tmp", false, false),
    ];

    #[test]
    fn patterns_match_as_rsync_does() {
        for &(pat, path, dir, want) in TABLE {
            assert_eq!(
                rule(pat).matches(path.as_bytes(), dir),
                want,
                "{pat} against {path} (dir: {dir})"
            );
        }
    }

    #[test]
    fn first_match_wins_and_an_excluded_directory_takes_everything_below() {
        let ex = Excludes {
            rules: vec![
                Rule::parse(true, "keep.tmp", 1).unwrap(),
                rule("*.tmp"),
                rule("/srv/cache/"),
            ],
        };
        assert!(!ex.excludes_below(b"srv", b"srv/keep.tmp", Some(false)));
        assert!(ex.excludes_below(b"srv", b"srv/a.tmp", Some(false)));
        assert!(ex.excludes_below(b"srv", b"srv/cache", Some(true)));
        // Below an excluded directory, even a `+` name is excluded.
        assert!(ex.excludes_below(b"srv", b"srv/cache/keep.tmp", Some(false)));
        assert!(ex.excludes_below(b"srv", b"srv/cache/d/x", None));
        // A file named like a directory-only pattern is not excluded;
        // unknown kind: excluded if either would be.
        assert!(!ex.excludes_below(b"srv", b"srv/cache", Some(false)));
        assert!(ex.excludes_below(b"srv", b"srv/cache", None));
        // Outside the root: never.
        assert!(!ex.excludes_below(b"srv", b"other/a.tmp", Some(false)));
        assert!(!ex.excludes_below(b"srv", b"srvx/a.tmp", Some(false)));
    }

    #[test]
    fn directories_above_the_root_are_not_tested() {
        let ex = Excludes {
            rules: vec![rule("lib/")],
        };
        assert!(!ex.excludes_below(b"var/lib/samba", b"var/lib/samba/x", Some(false)));
        assert!(ex.excludes_below(b"var/lib/samba", b"var/lib/samba/lib/x", Some(false)));
    }

    #[test]
    fn bad_patterns_say_what_was_expected() {
        for (p, want) in [
            ("", "expected a pattern"),
            ("/", "would match every path"),
            ("a[bc", "not closed"),
            ("a\\", "lone"),
            ("/var/../x", "`..`"),
            ("a//b", "empty"),
            ("[[:nope:]]", "unknown `[:class:]`"),
        ] {
            let e = Rule::parse(false, p, 3).unwrap_err();
            assert!(e.contains(want), "{p:?}: {e}");
        }
    }

    #[test]
    fn anchored_patterns_outside_every_root_are_found() {
        let roots: &[(&[u8], bool)] = &[(b"var/lib/samba", true), (b"etc/samba/smb.conf", false)];
        for (p, outside) in [
            ("/var/lib/samba/cache/", false),
            ("/var/lib/*/cache/", false),
            ("/var/lib/samba/**/x", false),
            ("/var/**", false),
            ("/etc/samba/smb.conf", false),
            ("/srv/x", true),
            ("/var/lib/", true),
            ("/var/lib/sam", true),
            ("/etc/samba/smb.conf/x", true),
            ("/etc/samba/other", true),
            ("/srv/**/x", true),
            ("*.tmp", false),
        ] {
            assert_eq!(rule(p).outside(roots), outside, "{p}");
        }
        let ex = Excludes {
            rules: vec![rule("/srv/x"), rule("samba/")],
        };
        let w = ex.warnings(&[(b"var/lib/samba", true, 1)]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].1.contains("can never match"), "{w:?}");
        assert!(w[1].1.contains("excludes the root /var/lib/samba/ (line 1)"), "{w:?}");
    }

    #[test]
    fn many_stars_do_not_backtrack_forever() {
        let r = rule("/srv/**a**a**a**a**a**a**a**b");
        let path = format!("srv/{}", "a/".repeat(200));
        let t = std::time::Instant::now();
        assert!(!r.matches(path.as_bytes(), false));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    proptest::proptest! {
        /// A literal name as an unanchored pattern matches exactly the paths
        /// whose last component it is; anchored, exactly that path.
        #[test]
        fn literal_patterns(comps in proptest::collection::vec("[a-c]{1,2}", 1..5), name in "[a-c]{1,2}") {
            let path = comps.join("/");
            let last = comps.last().unwrap().clone();
            proptest::prop_assert_eq!(rule(&name).matches(path.as_bytes(), false), last == name);
            let (anchored, anchored_dir) = (format!("/{path}"), format!("/{path}/"));
            proptest::prop_assert!(rule(&anchored).matches(path.as_bytes(), false));
            proptest::prop_assert!(rule(&anchored_dir).matches(path.as_bytes(), true));
            proptest::prop_assert!(rule("**").matches(path.as_bytes(), false));
            proptest::prop_assert_eq!(rule("*").matches(path.as_bytes(), false), true);
            proptest::prop_assert_eq!(rule(&format!("/{}", comps[0])).matches(path.as_bytes(), false), comps.len() == 1);
        }
    }
}
