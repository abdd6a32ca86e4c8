//! Small built-in content (projects, workbooks, views, data sources, users, groups) and the REST
//! answers made from it, in the XML shapes tableauserverclient parses and Tableau's JSON mapping.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::config::Site;
use tableau_common::catalog::Method;

/// Tableau's XML namespace.
pub(crate) const NS: &str = "http://tableau.com/api";

/// An element: name, attributes, children. `list` marks containers whose children are rendered
/// as a JSON array.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: &'static str,
    pub attrs: Vec<(&'static str, String)>,
    pub children: Vec<Node>,
    pub list: bool,
    pub text: Option<String>,
}

impl Node {
    pub(crate) fn new(name: &'static str) -> Node {
        Node {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
            list: false,
            text: None,
        }
    }

    pub(crate) fn text(mut self, text: impl Into<String>) -> Node {
        self.text = Some(text.into());
        self
    }

    pub(crate) fn list(name: &'static str, children: Vec<Node>) -> Node {
        Node {
            name,
            attrs: Vec::new(),
            children,
            list: true,
            text: None,
        }
    }

    pub(crate) fn attr(mut self, key: &'static str, value: impl Into<String>) -> Node {
        self.attrs.push((key, value.into()));
        self
    }

    pub(crate) fn child(mut self, child: Node) -> Node {
        self.children.push(child);
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn write_xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&quick_xml::escape::escape(v.as_str()));
            out.push('"');
        }
        if self.children.is_empty() && self.text.is_none() {
            out.push_str("/>");
        } else {
            out.push('>');
            if let Some(t) = &self.text {
                out.push_str(&quick_xml::escape::escape(t.as_str()));
            }
            for c in &self.children {
                c.write_xml(out);
            }
            out.push_str("</");
            out.push_str(self.name);
            out.push('>');
        }
    }

    fn to_json(&self) -> Value {
        if let (Some(t), true) = (
            &self.text,
            self.attrs.is_empty() && self.children.is_empty(),
        ) {
            return Value::String(t.clone());
        }
        let mut map = Map::new();
        if let Some(t) = &self.text {
            map.insert("value".to_owned(), Value::String(t.clone()));
        }
        for (k, v) in &self.attrs {
            map.insert((*k).to_owned(), Value::String(v.clone()));
        }
        let mut groups: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for c in &self.children {
            groups.entry(c.name).or_default().push(c.to_json());
        }
        for (name, mut values) in groups {
            let v = if self.list || values.len() > 1 {
                Value::Array(values)
            } else {
                values.pop().unwrap_or(Value::Null)
            };
            map.insert(name.to_owned(), v);
        }
        Value::Object(map)
    }
}

/// `<tsResponse>` with these children, as XML.
pub(crate) fn to_xml(children: &[Node]) -> String {
    let mut out = String::from("<?xml version='1.0' encoding='UTF-8'?>");
    out.push_str("<tsResponse xmlns=\"");
    out.push_str(NS);
    out.push_str("\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"http://tableau.com/api https://help.tableau.com/samples/en-us/rest_api/ts-api_3_24.xsd\"");
    if children.is_empty() {
        out.push_str("/>");
        return out;
    }
    out.push('>');
    for c in children {
        c.write_xml(&mut out);
    }
    out.push_str("</tsResponse>");
    out
}

/// The same children as Tableau's JSON (`{"pagination":{...},"projects":{"project":[...]}}`).
pub(crate) fn to_json(children: &[Node]) -> String {
    let root = Node {
        name: "tsResponse",
        attrs: Vec::new(),
        children: children.to_vec(),
        list: false,
        text: None,
    };
    root.to_json().to_string()
}

/// A REST answer before rendering.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 200/201/202 with a `<tsResponse>` body.
    Doc(u16, Vec<Node>),
    /// 204.
    Empty,
    /// A file: content type and bytes.
    File(&'static str, Vec<u8>),
    /// 404 with code 404000 and this detail.
    NotFound(String),
}

const CREATED: &str = "2024-05-02T09:30:00Z";
const UPDATED: &str = "2024-06-11T14:05:00Z";

/// The fixture content of one site.
#[derive(Debug)]
pub(crate) struct Content {
    projects: Vec<Node>,
    workbooks: Vec<Node>,
    views: Vec<Node>,
    datasources: Vec<Node>,
    users: Vec<Node>,
    groups: Vec<Node>,
    site: Node,
}

const P_DEFAULT: &str = "5f6a7b8c-0001-4d1e-9a00-000000000001";
const P_FINANCE: &str = "5f6a7b8c-0001-4d1e-9a00-000000000002";
const P_QUARTER: &str = "5f6a7b8c-0001-4d1e-9a00-000000000003";
const W_SUPERSTORE: &str = "6a7b8c9d-0002-4e2f-8b00-000000000001";
const W_BUDGET: &str = "6a7b8c9d-0002-4e2f-8b00-000000000002";
const V_OVERVIEW: &str = "7b8c9d0e-0003-4f30-9c00-000000000001";
const V_PRODUCT: &str = "7b8c9d0e-0003-4f30-9c00-000000000002";
const V_FORECAST: &str = "7b8c9d0e-0003-4f30-9c00-000000000003";
const D_SUPERSTORE: &str = "8c9d0e1f-0004-4031-8d00-000000000001";
const D_LEDGER: &str = "8c9d0e1f-0004-4031-8d00-000000000002";
const G_ALL: &str = "9d0e1f20-0005-4142-9e00-000000000001";
const G_ANALYSTS: &str = "9d0e1f20-0005-4142-9e00-000000000002";

fn tags(labels: &[&str]) -> Node {
    Node::list(
        "tags",
        labels
            .iter()
            .map(|l| Node::new("tag").attr("label", *l))
            .collect(),
    )
}

impl Content {
    /// Content for `site`, owned by its first user.
    pub(crate) fn for_site(site: &Site, base_url: &str) -> Content {
        let owner = site
            .users
            .first()
            .map(|u| u.luid.clone())
            .unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".to_owned());
        let site_path = if site.content_url.is_empty() {
            String::new()
        } else {
            format!("/site/{}", site.content_url)
        };
        let project = |id: &str, name: &str, desc: &str, parent: Option<&str>| {
            let mut n = Node::new("project")
                .attr("id", id)
                .attr("name", name)
                .attr("description", desc)
                .attr("contentPermissions", "ManagedByOwner")
                .attr("createdAt", CREATED)
                .attr("updatedAt", UPDATED);
            if let Some(p) = parent {
                n = n.attr("parentProjectId", p);
            }
            n.child(Node::new("owner").attr("id", owner.clone()))
        };
        let projects = vec![
            project(
                P_DEFAULT,
                "Default",
                "The default project that was automatically created by Tableau.",
                None,
            ),
            project(P_FINANCE, "Finance", "Budgets and forecasts", None),
            project(P_QUARTER, "Quarterly", "Quarterly close", Some(P_FINANCE)),
        ];
        let workbook = |id: &str,
                        name: &str,
                        url: &str,
                        pid: &str,
                        pname: &str,
                        view: &str,
                        labels: &[&str]| {
            Node::new("workbook")
                .attr("id", id)
                .attr("name", name)
                .attr("description", "")
                .attr("contentUrl", url)
                .attr(
                    "webpageUrl",
                    format!("{base_url}/#{site_path}/workbooks/{url}"),
                )
                .attr("showTabs", "true")
                .attr("size", "2")
                .attr("createdAt", CREATED)
                .attr("updatedAt", UPDATED)
                .attr("encryptExtracts", "false")
                .attr("defaultViewId", view)
                .child(Node::new("project").attr("id", pid).attr("name", pname))
                .child(Node::new("owner").attr("id", owner.clone()))
                .child(tags(labels))
        };
        let workbooks = vec![
            workbook(
                W_SUPERSTORE,
                "Superstore",
                "Superstore",
                P_DEFAULT,
                "Default",
                V_OVERVIEW,
                &["sales", "sample"],
            ),
            workbook(
                W_BUDGET,
                "Budget",
                "Budget",
                P_FINANCE,
                "Finance",
                V_FORECAST,
                &["finance"],
            ),
        ];
        let view = |id: &str, name: &str, wb: &str, wb_url: &str, pid: &str, count: &str| {
            let url_name = name.replace(' ', "");
            Node::new("view")
                .attr("id", id)
                .attr("name", name)
                .attr("contentUrl", format!("{wb_url}/sheets/{url_name}"))
                .attr("viewUrlName", url_name)
                .attr("createdAt", CREATED)
                .attr("updatedAt", UPDATED)
                .attr("sheetType", "dashboard")
                .child(Node::new("workbook").attr("id", wb))
                .child(Node::new("owner").attr("id", owner.clone()))
                .child(Node::new("project").attr("id", pid))
                .child(tags(&[]))
                .child(Node::new("usage").attr("totalViewCount", count))
        };
        let views = vec![
            view(
                V_OVERVIEW,
                "Overview",
                W_SUPERSTORE,
                "Superstore",
                P_DEFAULT,
                "42",
            ),
            view(
                V_PRODUCT,
                "Product",
                W_SUPERSTORE,
                "Superstore",
                P_DEFAULT,
                "7",
            ),
            view(V_FORECAST, "Forecast", W_BUDGET, "Budget", P_FINANCE, "3"),
        ];
        let datasource = |id: &str, name: &str, url: &str, kind: &str, pid: &str, pname: &str| {
            Node::new("datasource")
                .attr("id", id)
                .attr("name", name)
                .attr("contentUrl", url)
                .attr("type", kind)
                .attr("description", "")
                .attr("createdAt", CREATED)
                .attr("updatedAt", UPDATED)
                .attr("isCertified", "false")
                .attr("encryptExtracts", "false")
                .attr("hasExtracts", "true")
                .attr("useRemoteQueryAgent", "false")
                .attr(
                    "webpageUrl",
                    format!("{base_url}/#{site_path}/datasources/{url}"),
                )
                .child(Node::new("project").attr("id", pid).attr("name", pname))
                .child(Node::new("owner").attr("id", owner.clone()))
                .child(tags(&[]))
        };
        let datasources = vec![
            datasource(
                D_SUPERSTORE,
                "Sample - Superstore",
                "Sample-Superstore",
                "excel-direct",
                P_DEFAULT,
                "Default",
            ),
            datasource(
                D_LEDGER, "Ledger", "Ledger", "postgres", P_FINANCE, "Finance",
            ),
        ];
        let users = site
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                Node::new("user")
                    .attr("id", u.luid.clone())
                    .attr("name", u.name.clone())
                    .attr(
                        "siteRole",
                        if i == 0 {
                            "SiteAdministratorCreator"
                        } else {
                            "Creator"
                        },
                    )
                    .attr("authSetting", "ServerDefault")
                    .attr("lastLogin", UPDATED)
                    .attr("fullName", u.name.clone())
            })
            .collect();
        let groups = vec![
            Node::new("group")
                .attr("id", G_ALL)
                .attr("name", "All Users")
                .attr("userCount", site.users.len().to_string())
                .child(Node::new("domain").attr("name", "local")),
            Node::new("group")
                .attr("id", G_ANALYSTS)
                .attr("name", "Analysts")
                .attr("userCount", site.users.len().min(1).to_string())
                .child(Node::new("domain").attr("name", "local")),
        ];
        let site = Node::new("site")
            .attr("id", site.luid.clone())
            .attr("name", site.name.clone())
            .attr("contentUrl", site.content_url.clone())
            .attr("adminMode", "ContentAndUsers")
            .attr("state", "Active");
        Content {
            projects,
            workbooks,
            views,
            datasources,
            users,
            groups,
            site,
        }
    }
}

/// Query parameters that matter to lists: paging and `filter=field:eq:value,...`.
#[derive(Debug, Default)]
pub(crate) struct ListQuery {
    page_size: usize,
    page_number: usize,
    filters: Vec<(String, String)>,
}

impl ListQuery {
    pub(crate) fn parse(query: Option<&str>) -> ListQuery {
        let mut q = ListQuery {
            page_size: 100,
            page_number: 1,
            filters: Vec::new(),
        };
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "pageSize" => q.page_size = v.parse().unwrap_or(100).clamp(1, 1000),
                "pageNumber" => q.page_number = v.parse().unwrap_or(1).max(1),
                "filter" => {
                    for expr in v.split(',') {
                        let mut p = expr.splitn(3, ':');
                        if let (Some(field), Some("eq"), Some(value)) =
                            (p.next(), p.next(), p.next())
                        {
                            q.filters.push((field.to_owned(), value.to_owned()));
                        }
                    }
                }
                _ => {}
            }
        }
        q
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn page(container: &'static str, items: Vec<Node>, q: &ListQuery) -> Answer {
    let items: Vec<Node> = items
        .into_iter()
        .filter(|n| q.filters.iter().all(|(f, v)| n.get(f) == Some(v.as_str())))
        .collect();
    let total = items.len();
    let start = (q.page_number - 1).saturating_mul(q.page_size);
    let shown = items.into_iter().skip(start).take(q.page_size).collect();
    Answer::Doc(
        200,
        vec![
            Node::new("pagination")
                .attr("pageNumber", q.page_number.to_string())
                .attr("pageSize", q.page_size.to_string())
                .attr("totalAvailable", total.to_string()),
            Node::list(container, shown),
        ],
    )
}

fn one(items: &[Node], id: &str, what: &str) -> Answer {
    match items.iter().find(|n| n.get("id") == Some(id)) {
        Some(n) => Answer::Doc(200, vec![n.clone()]),
        None => Answer::NotFound(format!("The {what} '{id}' could not be found.")),
    }
}

fn child_id<'a>(n: &'a Node, child: &str) -> Option<&'a str> {
    n.children
        .iter()
        .find(|c| c.name == child)
        .and_then(|c| c.get("id"))
}

/// The fixture answer for an allowed call. `segs` are the path segments after `/api/{version}`
/// (`["sites", "{site}", "workbooks", ...]`).
pub(crate) fn answer(method: &Method, segs: &[&str], query: Option<&str>, c: &Content) -> Answer {
    let q = ListQuery::parse(query);
    let id = segs.get(3).copied().unwrap_or("");
    match method.name {
        "Query Projects" => page("projects", c.projects.clone(), &q),
        "Query Workbooks for Site" => page("workbooks", c.workbooks.clone(), &q),
        "Query Workbook" => one(&c.workbooks, id, "workbook"),
        "Query Views for Site" | "Get View by Path" => page("views", c.views.clone(), &q),
        "Get View" => one(&c.views, id, "view"),
        "Query Views for Workbook" => {
            if c.workbooks.iter().all(|w| w.get("id") != Some(id)) {
                return Answer::NotFound(format!("The workbook '{id}' could not be found."));
            }
            let vs = c
                .views
                .iter()
                .filter(|v| child_id(v, "workbook") == Some(id))
                .cloned()
                .collect();
            Answer::Doc(200, vec![Node::list("views", vs)])
        }
        "Query Data Sources" => page("datasources", c.datasources.clone(), &q),
        "Query Data Source" => one(&c.datasources, id, "data source"),
        "Query Data Source Connections" => Answer::Doc(
            200,
            vec![Node::list(
                "connections",
                vec![
                    Node::new("connection")
                        .attr("id", "a0b1c2d3-0006-4253-af00-000000000001")
                        .attr("type", "postgres")
                        .attr("serverAddress", "db.example.internal")
                        .attr("serverPort", "5432")
                        .attr("userName", "reader"),
                ],
            )],
        ),
        "Get Users on Site" | "Get Users in Group" => page("users", c.users.clone(), &q),
        "Query User On Site" => one(&c.users, id, "user"),
        "Query Groups" | "Get Groups for a User" => page("groups", c.groups.clone(), &q),
        "Query Sites" => page("sites", vec![c.site.clone()], &q),
        "Get Recently Viewed for Site" => Answer::Doc(200, vec![Node::list("recents", Vec::new())]),
        "List Extract Refresh Tasks in Site" => {
            Answer::Doc(200, vec![Node::list("tasks", Vec::new())])
        }
        "List Subscriptions" => page("subscriptions", Vec::new(), &q),
        "List Custom Views" => page("customViews", Vec::new(), &q),
        "List Metrics for Site" => page("metrics", Vec::new(), &q),
        "Update Data Source Now" | "Update Workbook Now" | "Run Extract Refresh Task" => {
            Answer::Doc(
                202,
                vec![
                    Node::new("job")
                        .attr("id", uuid::Uuid::new_v4().to_string())
                        .attr("mode", "Asynchronous")
                        .attr("type", "RefreshExtract")
                        .attr("createdAt", UPDATED),
                ],
            )
        }
        _ => generic(method, segs),
    }
}

/// Downloads get bytes; other writes an empty document; deletes 204.
fn generic(method: &Method, segs: &[&str]) -> Answer {
    let last = segs.last().copied().unwrap_or("");
    match (method.http_method.unwrap_or("GET"), last) {
        ("GET", "image" | "previewImage") => Answer::File("image/png", PNG_1X1.to_vec()),
        ("GET", "pdf") => Answer::File(
            "application/pdf",
            b"%PDF-1.4\n% fake-tableau\n%%EOF\n".to_vec(),
        ),
        ("GET", "data") => Answer::File("text/csv", b"Region,Sales\nEast,100\nWest,200\n".to_vec()),
        ("GET", "excel" | "powerpoint" | "content") => Answer::File(
            "application/octet-stream",
            b"PK\x03\x04fake-tableau".to_vec(),
        ),
        ("GET", _) => Answer::Doc(200, Vec::new()),
        ("DELETE", _) => Answer::Empty,
        ("POST", _) => Answer::Doc(201, Vec::new()),
        _ => Answer::Doc(200, Vec::new()),
    }
}

/// A 1x1 transparent PNG.
const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_are_arrays_and_xml_escapes() {
        let doc = vec![Node::list(
            "projects",
            vec![Node::new("project").attr("name", "a<b")],
        )];
        let json: Value = serde_json::from_str(&to_json(&doc)).unwrap();
        assert_eq!(json["projects"]["project"][0]["name"], "a<b");
        assert!(to_xml(&doc).contains("name=\"a&lt;b\""));
    }

    #[test]
    fn list_query_pages_and_filters() {
        let q = ListQuery::parse(Some("pageSize=1&pageNumber=2&filter=name%3Aeq%3AFinance"));
        assert_eq!((q.page_size, q.page_number), (1, 2));
        assert_eq!(q.filters, vec![("name".to_owned(), "Finance".to_owned())]);
    }
}
