//! `kubectl kubundle history NAME [--revision N]`: the revisions kubundle recorded
//! ([`crate::history`]) as a table, or one revision's spec.

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::{PluginError, to_json};
use crate::api::AppBundle;
use crate::history::{Revision, revisions};
use crate::render::selector_string;

pub(super) async fn bundle(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<AppBundle, PluginError> {
    Api::<AppBundle>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::not_found(name, ns))
}

pub(super) async fn recorded(
    client: &Client,
    ns: &str,
    bundle: &AppBundle,
) -> Result<Vec<Revision>, PluginError> {
    let params = ListParams::default().labels(&selector_string(&bundle.name_any()));
    let list = Api::<ControllerRevision>::namespaced(client.clone(), ns)
        .list(&params)
        .await?;
    Ok(revisions(
        list.items,
        bundle.metadata.uid.as_deref().unwrap_or_default(),
    ))
}

/// One line of `history -o json`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry<'a> {
    #[serde(flatten)]
    revision: &'a Revision,
    image: &'a str,
    /// It is the revision that runs (status.currentRevision).
    current: bool,
}

pub async fn history(
    client: &Client,
    ns: &str,
    name: &str,
    number: Option<i64>,
    json: bool,
) -> Result<String, PluginError> {
    let bundle = bundle(client, ns, name).await?;
    let revs = recorded(client, ns, &bundle).await?;
    let current = bundle
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone());
    if let Some(n) = number {
        let rev = revs
            .iter()
            .find(|r| r.number == n)
            .ok_or_else(|| PluginError::User(format!("appbundle/{name} has no revision {n}")))?;
        return Ok(if json {
            to_json(rev)
        } else {
            let spec = serde_saphyr::to_string(&rev.spec).unwrap_or_default();
            format!(
                "appbundle/{name} revision {n} ({})\nspec:\n{}",
                rev.name,
                indent(&spec)
            )
        });
    }
    if json {
        let entries: Vec<HistoryEntry> = revs
            .iter()
            .map(|r| HistoryEntry {
                revision: r,
                image: r.image(),
                current: current.as_deref() == Some(r.name.as_str()),
            })
            .collect();
        return Ok(to_json(&entries));
    }
    if revs.is_empty() {
        return Ok(format!(
            "appbundle/{name} has no recorded revision yet: kubundle records each spec once it is fully rolled out (Ready)\n"
        ));
    }
    let mut out = format!("appbundle/{name}\n");
    let rows: Vec<[String; 4]> = revs
        .iter()
        .map(|r| {
            [
                r.number.to_string(),
                r.image().to_string(),
                r.recorded
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                if current.as_deref() == Some(r.name.as_str()) {
                    format!("{} (running)", r.name)
                } else {
                    r.name.clone()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        ["REVISION", "IMAGE", "FIRST RECORDED", "CONTROLLERREVISION"],
        &rows,
    ));
    out.push_str(&canary_line(&bundle));
    Ok(out)
}

/// The canary under way (or the last one), which is no revision until it is promoted.
fn canary_line(bundle: &AppBundle) -> String {
    use crate::api::rollout::Phase;
    let Some(r) = bundle.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        return String::new();
    };
    let recorded = if r.phase == Phase::Promoted {
        "recorded above once promoted"
    } else {
        "not a revision: a spec is recorded once promoted"
    };
    format!(
        "canary: {:?}, image {}, step {}, {}% of the requests ({recorded}): {}\n",
        r.phase,
        bundle.spec.image,
        r.step_index + 1,
        r.weight,
        r.message
    )
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Columns padded to their widest cell, as kubectl prints tables.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = [
            ["1".to_string(), "app:1".to_string(), "x".to_string()],
            [
                "10".to_string(),
                "app:22".to_string(),
                "y (running)".to_string(),
            ],
        ];
        assert_eq!(
            table(["REVISION", "IMAGE", "NAME"], &rows),
            "REVISION   IMAGE    NAME\n1          app:1    x\n10         app:22   y (running)\n"
        );
    }
}
