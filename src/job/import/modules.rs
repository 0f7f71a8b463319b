//! Module values in `import`: which module types the input holds, which modules the target
//! has loaded (`MODULE LIST`), and whether one serves the other. Used by the precheck (the
//! "modules" row) and by `import` (a key whose module the target lacks is refused before it
//! is sent).
//!
//! The RDB names a module value by its *type*: the 9-character name and the encoding version
//! a module gave `RM_CreateDataType` (`ReJSON-RL`, encver 3). `MODULE LIST` names *modules*:
//! the name given to `RM_Init` (`ReJSON`). Redis has no command that lists the types a server
//! knows, so a type is matched to a module in three ways:
//! - [`KNOWN_TYPES`], a table of the types of the common modules, read from their sources;
//! - a type named like a loaded module (the `hellotype` example module registers a type of its
//!   own name);
//! - a target that has loaded no module at all lacks every type.
//!
//! Anything else is undecided: the precheck warns with the type names, and the keys are sent
//! (a target that lacks the module answers `RESTORE` with "Bad data format", and the writer
//! names the type). This never fails an import on a guess.
//!
//! Not here: whether the loaded module reads the value's encoding version. Only the module
//! knows (Redis hands the encver to its `rdb_load`); a too-old module refuses the payload
//! with "Bad data format" as well.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::net::Conn;
use crate::rdb::KeyRecord;
use crate::rdb::module::ModuleId;
use crate::resp::Reply;

/// Module types of common modules and the module names that register them (`RM_Init`), from
/// the modules' sources: RedisJSON (and valkey-json, which keeps the type name), RedisBloom,
/// valkey-bloom, RediSearch (named `ft` before 2.0), RedisTimeSeries, RedisGraph/FalkorDB.
pub const KNOWN_TYPES: &[(&str, &[&str])] = &[
    ("ReJSON-RL", &["ReJSON", "json"]),
    ("MBbloom--", &["bf"]),
    ("MBbloomCF", &["bf"]),
    ("CMSk-TYPE", &["bf"]),
    ("TopK-TYPE", &["bf"]),
    ("TDIS-TYPE", &["bf"]),
    ("bloomfltr", &["bf", "bloom"]),
    ("ft_index0", &["search", "ft"]),
    ("ft_invidx", &["search", "ft"]),
    ("numericdx", &["search", "ft"]),
    ("ft_tagidx", &["search", "ft"]),
    ("trietype0", &["search", "ft"]),
    ("TSDB-TYPE", &["timeseries"]),
    ("graphdata", &["graph"]),
    ("graphmeta", &["graph"]),
];

/// The module names known to register type `type_name` (empty when the type is unknown).
pub fn modules_of(type_name: &str) -> &'static [&'static str] {
    KNOWN_TYPES
        .iter()
        .find(|(t, _)| *t == type_name)
        .map(|(_, m)| *m)
        .unwrap_or(&[])
}

/// The module type of a key, when it is a module value (type 7): its id's name and encver.
pub fn module_type(rec: &KeyRecord<'_>) -> Option<ModuleId> {
    if rec.type_id != crate::rdb::types::type_id::MODULE_2 {
        return None;
    }
    let mut c = crate::rdb::cursor::Cursor::new(rec.raw, 0);
    c.length().ok().map(ModuleId)
}

/// The keys of one module type in the input.
#[derive(Debug, Clone, Default)]
pub struct Needed {
    /// Encoding versions seen.
    pub encvers: BTreeSet<u16>,
    /// Keys of this type.
    pub keys: u64,
}

/// Module types of the input: type name → keys.
pub type Needs = BTreeMap<String, Needed>;

/// Count a module value of type `id` in `needs`.
pub fn add_need(needs: &mut Needs, id: ModuleId) {
    let n = needs.entry(id.name()).or_default();
    n.encvers.insert(id.encver());
    n.keys += 1;
}

/// What the target's nodes (one, or every Cluster master) answered to `MODULE LIST`.
#[derive(Debug, Clone, Default)]
pub struct TargetModules {
    /// Per node (`host:port`): the loaded module names, or `None` when `MODULE LIST` was
    /// refused (ACL) or answered something we cannot read.
    nodes: Vec<(String, Option<Vec<String>>)>,
}

/// Whether the target can load a module type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Every node has a module that registers it (the name of one).
    Loaded(String),
    /// These nodes lack it for sure (every node, on a standalone target).
    Missing(Vec<String>),
    /// Cannot tell: an unknown type on a node with modules, or `MODULE LIST` refused.
    Unknown,
}

impl TargetModules {
    /// Ask one node (`name` is how messages call it).
    pub fn query(&mut self, conn: &mut Conn, name: &str) -> Result<()> {
        let reply = conn.call(&[b"MODULE", b"LIST"])?;
        self.add_reply(name, &reply);
        Ok(())
    }

    /// Record a node's reply to `MODULE LIST`.
    pub fn add_reply(&mut self, node: &str, reply: &Reply) {
        self.nodes.push((node.to_string(), module_names(reply)));
    }

    /// Whether `MODULE LIST` was refused (or unreadable) on some node.
    pub fn refused(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|(_, m)| m.is_none())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Every module name loaded on some node, deduplicated, in order.
    pub fn loaded(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.nodes
            .iter()
            .filter_map(|(_, m)| m.as_ref())
            .flatten()
            .map(String::as_str)
            .filter(|m| seen.insert(m.to_ascii_lowercase()))
            .collect()
    }

    /// Whether the target can load values of `type_name` (see the module doc).
    pub fn support(&self, type_name: &str) -> Support {
        if self.nodes.is_empty() {
            return Support::Unknown;
        }
        let known = modules_of(type_name);
        let mut missing = Vec::new();
        let mut unknown = false;
        let mut found = None;
        for (node, mods) in &self.nodes {
            let Some(mods) = mods else {
                unknown = true;
                continue;
            };
            // Module names are case-insensitive in Redis (its module dict compares so).
            let hit = mods.iter().find(|m| {
                m.eq_ignore_ascii_case(type_name) || known.iter().any(|k| k.eq_ignore_ascii_case(m))
            });
            match hit {
                Some(m) => found = Some(m.clone()),
                None if mods.is_empty() || !known.is_empty() => missing.push(node.clone()),
                None => unknown = true,
            }
        }
        if !missing.is_empty() {
            Support::Missing(missing)
        } else if unknown {
            Support::Unknown
        } else {
            found.map_or(Support::Unknown, Support::Loaded)
        }
    }

    /// Why a key of module type `id` cannot be written, when the target surely lacks its
    /// module (`None` when it has it, or when we cannot tell).
    pub fn refusal(&self, id: ModuleId) -> Option<String> {
        let name = id.name();
        let Support::Missing(nodes) = self.support(&name) else {
            return None;
        };
        let module = match modules_of(&name) {
            [] => String::new(),
            [m] => format!("; its module is {m}"),
            ms => format!("; its module is one of {}", ms.join(", ")),
        };
        let place = if nodes.len() == self.nodes.len() {
            "the target".to_string()
        } else {
            format!("the target's node {}", nodes.join(", "))
        };
        Some(format!(
            "module type {name} (encver {}) is not loaded on {place}{module}",
            id.encver()
        ))
    }

    /// The precheck row's status and detail for the input's module types, and the module
    /// types whose aux data (`MODULE_AUX` records) the input holds.
    pub fn row(&self, needs: &Needs, aux: &BTreeSet<String>, scanned: bool) -> (RowStatus, String) {
        // Aux data is no key: RESTORE cannot carry it, and import leaves it out (RediSearch
        // 2.x keeps its index definitions there).
        let aux_note = (!aux.is_empty()).then(|| {
            format!(
                "aux data of module type {} is not imported (it is no key; recreate what it \
                 holds, e.g. search indexes, on the target)",
                aux.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        });
        if needs.is_empty() {
            let none = if scanned {
                "no module values"
            } else {
                "no module values in the files scanned (standard input is not)"
            };
            return match aux_note {
                Some(n) => (RowStatus::Warn, format!("{none}; {n}")),
                None => (RowStatus::Ok, none.into()),
            };
        }
        let mut status = RowStatus::Ok;
        let mut parts = Vec::new();
        for (name, n) in needs {
            let encvers: Vec<String> = n.encvers.iter().map(u16::to_string).collect();
            let what = format!(
                "{name} (encver {}, {} key{})",
                encvers.join("/"),
                n.keys,
                if n.keys == 1 { "" } else { "s" }
            );
            parts.push(match self.support(name) {
                Support::Loaded(m) => format!("{what}: module {m} loaded"),
                Support::Missing(nodes) => {
                    status = RowStatus::Fail;
                    let module = match modules_of(name) {
                        [] => "its module".to_string(),
                        ms => format!("module {}", ms.join(" or ")),
                    };
                    if nodes.len() == self.nodes.len() {
                        format!("{what}: {module} not loaded on the target")
                    } else {
                        format!("{what}: {module} not loaded on {}", nodes.join(", "))
                    }
                }
                Support::Unknown => {
                    status = status.max(RowStatus::Warn);
                    format!("{what}: cannot tell which module registers this type")
                }
            });
        }
        if let Some(n) = aux_note {
            status = status.max(RowStatus::Warn);
            parts.push(n);
        }
        let loaded = self.loaded();
        let refused = self.refused();
        let mut detail = parts.join("; ");
        if !refused.is_empty() {
            detail += &format!("; MODULE LIST refused on {}", refused.join(", "));
        }
        detail += &if loaded.is_empty() {
            "; the target has no modules".to_string()
        } else {
            format!("; the target has {}", loaded.join(", "))
        };
        (status, detail)
    }
}

/// The status of the modules row, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowStatus {
    /// Every type is served.
    Ok,
    /// Some type cannot be matched to a module.
    Warn,
    /// Some type's module is surely missing.
    Fail,
}

/// The module names in a `MODULE LIST` reply (RESP2: arrays of `name value` pairs; RESP3:
/// maps). An empty list for a server older than modules ("unknown command": it cannot have
/// any); `None` for a refusal or a reply we cannot read.
fn module_names(reply: &Reply) -> Option<Vec<String>> {
    let entries = match reply {
        Reply::Array(a) => a,
        Reply::Error(e) if String::from_utf8_lossy(e).contains("unknown command") => {
            return Some(Vec::new());
        }
        _ => return None,
    };
    let mut names = Vec::new();
    for e in entries {
        let name = match e {
            Reply::Array(kv) => kv
                .chunks(2)
                .find(|p| p.first().and_then(Reply::as_bytes) == Some(b"name"))
                .and_then(|p| p.get(1))
                .and_then(Reply::as_bytes),
            Reply::Map(kv) => kv
                .iter()
                .find(|(k, _)| k.as_bytes() == Some(b"name"))
                .and_then(|(_, v)| v.as_bytes()),
            _ => None,
        }?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// A RESP2 `MODULE LIST` reply naming `mods`.
    fn list(mods: &[&str]) -> Reply {
        Reply::Array(
            mods.iter()
                .map(|m| {
                    Reply::Array(vec![
                        bulk("name"),
                        bulk(m),
                        bulk("ver"),
                        Reply::Integer(20609),
                        bulk("path"),
                        bulk("/usr/lib/redis/modules/x.so"),
                        bulk("args"),
                        Reply::Array(vec![]),
                    ])
                })
                .collect(),
        )
    }

    fn target(nodes: &[(&str, Reply)]) -> TargetModules {
        let mut t = TargetModules::default();
        for (n, r) in nodes {
            t.add_reply(n, r);
        }
        t
    }

    fn id(name: &str, encver: u16) -> ModuleId {
        let cs = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut v: u64 = 0;
        for ch in name.bytes() {
            let i = cs.iter().position(|c| *c == ch).unwrap_or(0) as u64;
            v = (v << 6) | i;
        }
        ModuleId((v << 10) | u64::from(encver))
    }

    #[test]
    fn parses_resp2_and_resp3_module_lists() {
        assert_eq!(
            module_names(&list(&["ReJSON", "search"])),
            Some(vec!["ReJSON".to_string(), "search".to_string()])
        );
        let resp3 = Reply::Array(vec![Reply::Map(vec![
            (bulk("name"), bulk("bf")),
            (bulk("ver"), Reply::Integer(20612)),
        ])]);
        assert_eq!(module_names(&resp3), Some(vec!["bf".to_string()]));
        assert_eq!(module_names(&Reply::Array(vec![])), Some(vec![]));
        let noperm = Reply::Error(b"NOPERM this user has no permissions".to_vec());
        assert_eq!(module_names(&noperm), None);
        let old = Reply::Error(b"ERR unknown command 'MODULE'".to_vec());
        assert_eq!(module_names(&old), Some(vec![]));
        assert_eq!(module_names(&Reply::Array(vec![Reply::Integer(1)])), None);
    }

    #[test]
    fn type_names_match_their_modules() {
        let t = target(&[("h:1", list(&["ReJSON", "bf", "hellotype"]))]);
        // The type name differs from the module name: the table matches them.
        assert_eq!(t.support("ReJSON-RL"), Support::Loaded("ReJSON".into()));
        assert_eq!(t.support("MBbloomCF"), Support::Loaded("bf".into()));
        // A type named like its module.
        assert_eq!(t.support("hellotype"), Support::Loaded("hellotype".into()));
        // A known type whose module is not among those loaded: surely missing.
        assert_eq!(t.support("TSDB-TYPE"), Support::Missing(vec!["h:1".into()]));
        // An unknown type on a target with modules: cannot tell.
        assert_eq!(t.support("mytype-01"), Support::Unknown);
        assert_eq!(t.refusal(id("mytype-01", 1)), None);
        assert_eq!(t.refusal(id("ReJSON-RL", 3)), None);
        assert_eq!(
            t.refusal(id("TSDB-TYPE", 2)).unwrap(),
            "module type TSDB-TYPE (encver 2) is not loaded on the target; its module is timeseries"
        );
        // Module names compare without case, as Redis does.
        let t = target(&[("h:1", list(&["rejson"]))]);
        assert_eq!(t.support("ReJSON-RL"), Support::Loaded("rejson".into()));
    }

    #[test]
    fn no_modules_means_every_type_is_missing() {
        let t = target(&[("h:1", list(&[]))]);
        assert_eq!(t.support("mytype-01"), Support::Missing(vec!["h:1".into()]));
        assert_eq!(
            t.refusal(id("ReJSON-RL", 3)).unwrap(),
            "module type ReJSON-RL (encver 3) is not loaded on the target; \
             its module is one of ReJSON, json"
        );
        assert_eq!(
            t.refusal(id("hellotype", 0)).unwrap(),
            "module type hellotype (encver 0) is not loaded on the target"
        );
    }

    #[test]
    fn refused_or_unasked_is_unknown() {
        let noperm = Reply::Error(b"NOPERM".to_vec());
        let t = target(&[("h:1", noperm.clone())]);
        assert_eq!(t.support("ReJSON-RL"), Support::Unknown);
        assert_eq!(t.refusal(id("ReJSON-RL", 3)), None);
        assert_eq!(
            TargetModules::default().support("ReJSON-RL"),
            Support::Unknown
        );
        assert_eq!(TargetModules::default().refusal(id("ReJSON-RL", 3)), None);
        // One Cluster master refused, another has it: still unknown, not loaded.
        let t = target(&[("a:1", list(&["ReJSON"])), ("b:2", noperm)]);
        assert_eq!(t.support("ReJSON-RL"), Support::Unknown);
    }

    #[test]
    fn cluster_masters_must_all_have_it() {
        let t = target(&[("a:1", list(&["ReJSON"])), ("b:2", list(&[]))]);
        assert_eq!(t.support("ReJSON-RL"), Support::Missing(vec!["b:2".into()]));
        assert_eq!(
            t.refusal(id("ReJSON-RL", 3)).unwrap(),
            "module type ReJSON-RL (encver 3) is not loaded on the target's node b:2; \
             its module is one of ReJSON, json"
        );
        let t = target(&[("a:1", list(&["ReJSON"])), ("b:2", list(&["ReJSON"]))]);
        assert_eq!(t.support("ReJSON-RL"), Support::Loaded("ReJSON".into()));
    }

    #[test]
    fn precheck_rows() {
        let none = BTreeSet::new();
        let mut needs = Needs::new();
        let t = target(&[("h:1", list(&["ReJSON"]))]);
        assert_eq!(
            t.row(&needs, &none, true),
            (RowStatus::Ok, "no module values".into())
        );
        add_need(&mut needs, id("ReJSON-RL", 3));
        add_need(&mut needs, id("ReJSON-RL", 3));
        let (st, detail) = t.row(&needs, &none, true);
        assert_eq!(st, RowStatus::Ok);
        assert_eq!(
            detail,
            "ReJSON-RL (encver 3, 2 keys): module ReJSON loaded; the target has ReJSON"
        );
        add_need(&mut needs, id("mytype-01", 1));
        assert_eq!(t.row(&needs, &none, true).0, RowStatus::Warn);
        assert!(
            t.row(&needs, &none, true)
                .1
                .contains("mytype-01 (encver 1, 1 key): cannot tell")
        );
        add_need(&mut needs, id("TSDB-TYPE", 0));
        let (st, detail) = t.row(&needs, &none, true);
        assert_eq!(st, RowStatus::Fail);
        assert!(
            detail.contains("TSDB-TYPE (encver 0, 1 key): module timeseries not loaded"),
            "{detail}"
        );
        let empty = target(&[("h:1", list(&[]))]);
        let (st, detail) = empty.row(&needs, &none, true);
        assert_eq!(st, RowStatus::Fail);
        assert!(detail.ends_with("; the target has no modules"), "{detail}");
        let refused = target(&[("h:1", Reply::Error(b"NOPERM".to_vec()))]);
        let (st, detail) = refused.row(&needs, &none, true);
        assert_eq!(st, RowStatus::Warn);
        assert!(detail.contains("MODULE LIST refused on h:1"), "{detail}");
        // Aux data is never imported: a warning, with or without module values.
        let aux: BTreeSet<String> = ["ft_index0".to_string()].into();
        let (st, detail) = t.row(&Needs::new(), &aux, true);
        assert_eq!(st, RowStatus::Warn);
        assert!(
            detail
                .starts_with("no module values; aux data of module type ft_index0 is not imported"),
            "{detail}"
        );
        let mut json = Needs::new();
        add_need(&mut json, id("ReJSON-RL", 3));
        let (st, detail) = t.row(&json, &aux, true);
        assert_eq!(st, RowStatus::Warn);
        assert!(
            detail.contains("module ReJSON loaded; aux data of"),
            "{detail}"
        );
    }
}
