//! The `xattrs` setting: which extended-attribute namespaces a set mirrors
//! (`xattrs = user security system.posix_acl` in `NODE.conf`, per set
//! `F<name>.xattrs = …`). Parsing and matching names only; reading and
//! writing attributes is `crate::xattr`'s.

use std::fmt;

/// The namespaces mirrored. The default is what `rsync -AX` run as root
/// copies: `user.*`, `security.*` and the POSIX ACLs. `trusted.*` only
/// when asked for, and then only when running as root (only root can see
/// it); other `system.*` names (NFSv4 ACLs, filesystem internals) never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrNamespaces {
    pub user: bool,
    pub security: bool,
    pub trusted: bool,
    /// `system.posix_acl_access` and `system.posix_acl_default`.
    pub acl: bool,
}

impl Default for XattrNamespaces {
    fn default() -> Self {
        XattrNamespaces {
            user: true,
            security: true,
            trusted: false,
            acl: true,
        }
    }
}

/// The accepted words, for error messages.
pub const WORDS: &str = "user, security, trusted, system.posix_acl (or acl), or none";

impl XattrNamespaces {
    /// Nothing mirrored.
    pub const NONE: XattrNamespaces = XattrNamespaces {
        user: false,
        security: false,
        trusted: false,
        acl: false,
    };

    /// Parses a space- or comma-separated list of namespaces, or `none`.
    ///
    /// # Errors
    /// A word that is not a namespace, or `none` with others.
    pub fn parse(s: &str) -> Result<XattrNamespaces, String> {
        let words: Vec<&str> = s.split([' ', ',', '\t']).filter(|w| !w.is_empty()).collect();
        if words == ["none"] {
            return Ok(XattrNamespaces::NONE);
        }
        let mut ns = XattrNamespaces::NONE;
        for w in words {
            match w {
                "user" => ns.user = true,
                "security" => ns.security = true,
                "trusted" => ns.trusted = true,
                "system.posix_acl" | "acl" => ns.acl = true,
                "none" => return Err("`none` cannot be combined with namespaces".into()),
                _ => return Err(format!("unknown namespace {w:?}; expected {WORDS}")),
            }
        }
        Ok(ns)
    }

    /// Whether no namespace is mirrored.
    pub fn is_none(&self) -> bool {
        *self == XattrNamespaces::NONE
    }

    /// Whether attribute `name` is mirrored. `root`: whether this process
    /// runs as root (`trusted.*` is only for root).
    pub fn matches(&self, name: &[u8], root: bool) -> bool {
        if let Some(rest) = name.strip_prefix(b"system.") {
            return self.acl && (rest == b"posix_acl_access" || rest == b"posix_acl_default");
        }
        (self.user && name.starts_with(b"user."))
            || (self.security && name.starts_with(b"security."))
            || (self.trusted && root && name.starts_with(b"trusted."))
    }
}

impl fmt::Display for XattrNamespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = [
            (self.user, "user"),
            (self.security, "security"),
            (self.trusted, "trusted"),
            (self.acl, "system.posix_acl"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        if words.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&words.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_parse_and_match() {
        let d = XattrNamespaces::default();
        assert_eq!(XattrNamespaces::parse("user security system.posix_acl").unwrap(), d);
        assert_eq!(d.to_string(), "user security system.posix_acl");
        assert!(XattrNamespaces::parse("none").unwrap().is_none());
        assert_eq!(
            XattrNamespaces::parse("user,acl").unwrap().to_string(),
            "user system.posix_acl"
        );
        assert!(XattrNamespaces::parse("user none").is_err());
        let e = XattrNamespaces::parse("usr").unwrap_err();
        assert!(e.contains("\"usr\"") && e.contains("expected"), "{e}");
        assert!(d.matches(b"user.DOSATTRIB", false));
        assert!(d.matches(b"system.posix_acl_default", false));
        assert!(!d.matches(b"system.nfs4_acl", true));
        assert!(!d.matches(b"trusted.x", true));
        let t = XattrNamespaces::parse("trusted").unwrap();
        assert!(t.matches(b"trusted.x", true) && !t.matches(b"trusted.x", false));
        assert!(!XattrNamespaces::NONE.matches(b"user.a", true));
    }
}
