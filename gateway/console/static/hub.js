// The hub's part of the console (one console for many sites). Loaded on every console
// page but does nothing unless /console/api/me says "hub": true; app.js then calls
// cgHub.init. Adds: the place (compound, building, site) on each alarm row, filters by
// subdistrict, community, compound, building, kind and level, a command's state (sent ->
// confirmed / not delivered / refused) and the fleet pages (subdistrict -> communities ->
// compounds -> gateways). Everything from the server goes in with textContent.
"use strict";
(function () {
  const STRINGS = {
    en: {
      role_admin: "admin",
      tab_fleet: "Fleet",
      f_subdistrict: "Subdistrict", f_community: "Community", f_compound: "Compound",
      f_building: "Building", f_kind: "Kind", f_level: "Level", f_any: "All",
      f_level_n: "Level {n} or more urgent",
      cmd_sent: "Sent; waiting for the gateway to confirm…",
      cmd_confirmed: "Confirmed by the gateway.",
      cmd_not_delivered: "Not delivered: {error}",
      cmd_refused: "Refused by the gateway: {error}",
      cmd_failed: "Failed: {error}",
      fleet_all: "All", fleet_name: "Name", fleet_gateways: "Gateways", fleet_offline: "Gateways offline",
      fleet_devices_offline: "Devices offline", fleet_open: "Open alarms", fleet_urgent: "Unacknowledged urgent",
      fleet_state: "State", fleet_alarms: "Show alarms",
      gw_online: "online", gw_offline: "offline", gw_silent: "silent", gw_unknown: "unknown",
      lvl_subdistrict: "Subdistrict", lvl_community: "Community", lvl_compound: "Compound",
    },
    zh: {
      role_admin: "管理员",
      tab_fleet: "总览",
      f_subdistrict: "街道", f_community: "社区", f_compound: "小区",
      f_building: "楼栋", f_kind: "类型", f_level: "级别", f_any: "全部",
      f_level_n: "{n}级及更紧急",
      cmd_sent: "已发送，等待网关确认…",
      cmd_confirmed: "网关已确认。",
      cmd_not_delivered: "未送达：{error}",
      cmd_refused: "网关拒绝：{error}",
      cmd_failed: "失败：{error}",
      fleet_all: "全部", fleet_name: "名称", fleet_gateways: "网关", fleet_offline: "离线网关",
      fleet_devices_offline: "离线设备", fleet_open: "未关闭告警", fleet_urgent: "未确认紧急告警",
      fleet_state: "状态", fleet_alarms: "查看告警",
      gw_online: "在线", gw_offline: "离线", gw_silent: "无心跳", gw_unknown: "未知",
      lvl_subdistrict: "街道", lvl_community: "社区", lvl_compound: "小区",
    },
  };
  for (const lang of Object.keys(STRINGS)) Object.assign(window.CG_I18N[lang], STRINGS[lang]);

  const FILTERS = ["subdistrict", "community", "compound", "building", "kind", "level"];
  const filters = {};   // name -> wanted value ("" = any)
  let ctx = null;       // {state, render, h, t, api, showTab} from app.js
  const $ = (id) => document.getElementById(id);
  const fleetPath = []; // [subdistrict, community, compound] chosen so far
  let fleetTimer = null;
  let listChanged = () => {};   // set by init

  function keep(a) {
    for (const name of FILTERS) {
      const wanted = filters[name];
      if (!wanted) continue;
      if (name === "level") {
        if (!(typeof a.severity === "number" && a.severity <= Number(wanted))) return false;
      } else if (String(a[name] ?? "") !== wanted) return false;
    }
    return true;
  }

  // What the alarm list's order was made with (app.js sorts again when it changes).
  function filterKey() {
    return FILTERS.map((name) => filters[name] || "").join("\n");
  }

  function place(a) {
    // the building is in the alarm's own location (app.js shows it next)
    return [a.compound, a.site_name || a.site].filter(Boolean).join(ctx.state.lang === "zh" ? " " : " · ");
  }

  function commandState(what, message) {
    const el = $("hub-command");
    document.body.dataset.command = what;
    if (!el) return;
    el.dataset.state = what;
    el.textContent = ctx.t("cmd_" + (STRINGS.en["cmd_" + what] ? what : "failed"), {error: message || ""});
    el.hidden = what === "confirmed";
  }

  // ---- filters --------------------------------------------------------------------

  function filterBar() {
    const {h, t} = ctx;
    const bar = h("form", {id: "hub-filters", class: "history-form hub-filters"});
    for (const name of FILTERS) {
      const select = h("select", {name, "data-filter": name});
      select.addEventListener("focus", () => fillOptions(select));
      select.addEventListener("mousedown", () => fillOptions(select));
      select.addEventListener("change", () => { filters[name] = select.value; ctx.render("alarms"); });
      bar.append(h("label", {}, h("span", {"data-i18n": "f_" + name, text: t("f_" + name)}), " ", select));
      fillOptions(select);
    }
    bar.addEventListener("submit", (e) => e.preventDefault());
    return bar;
  }

  // "Building 2" before "Building 10". One collator for every comparison: localeCompare with
  // options builds one per call, and the refill below sorted hundreds of buildings that way
  // (a bench trace: 120-200 ms a refill with 5,000 alarms from 500 gateways).
  const NATURAL = new Intl.Collator(undefined, {numeric: true});

  // Every filter's values (but the level's) in one pass over the alarms and gateways: the
  // refill after list changes reads thousands of alarms, once, not once per filter.
  // The alarms' part is read again only when alarms were raised or closed (an update never
  // moves an alarm), the gateways' part when new cards came.
  let fromAlarms = {membership: null, sets: null};
  let fromDevices = {devices: null, sets: null};

  function filterValues() {
    const {state} = ctx;
    const collect = (rows) => {
      const seen = new Map(FILTERS.map((name) => [name, new Set()]));
      for (const row of rows) {
        for (const [name, set] of seen) {
          const v = row[name];
          if (v !== undefined && v !== null && v !== "") set.add(String(v));
        }
      }
      return seen;
    };
    if (fromAlarms.membership !== state.membership) {
      fromAlarms = {membership: state.membership, sets: collect(state.alarms.values())};
    }
    if (fromDevices.devices !== state.devices) fromDevices = {devices: state.devices, sets: collect(state.devices)};
    const out = {};
    for (const name of FILTERS) {
      out[name] = [...new Set([...fromAlarms.sets.get(name), ...fromDevices.sets.get(name)])].sort(NATURAL.compare);
    }
    return out;
  }

  function fillOptions(select, known) {
    const {h, t} = ctx;
    const name = select.dataset.filter;
    let values;
    if (name === "level") values = ["0", "1", "2", "3", "4"];
    else values = [...(known || filterValues())[name]];
    const current = filters[name] || "";
    if (current && !values.includes(current)) values.push(current);
    // Refilled after every change of the alarm list: rebuild the options only when they
    // changed (a hub's building filter has hundreds).
    const key = ctx.state.lang + "\n" + values.join("\n");
    if (select.dataset.filled !== key) {
      select.dataset.filled = key;
      select.replaceChildren(h("option", {value: "", text: t("f_any")}),
        ...values.map((v) => h("option", {value: v, text: name === "level" ? t("f_level_n", {n: v}) : v})));
    }
    select.value = current;
  }

  function setFilters(wanted) {
    for (const name of FILTERS) filters[name] = wanted[name] || "";
    const known = filterValues();
    for (const select of document.querySelectorAll("#hub-filters select")) fillOptions(select, known);
    ctx.render("alarms");
  }

  // ---- fleet pages: subdistrict -> communities -> compounds -> gateways -------------

  async function loadFleet() {
    if ($("tab-fleet").hidden) return;
    let fleet;
    try {
      fleet = await ctx.api("/console/api/fleet");
    } catch (err) {
      return;   // the live banner says the link is down
    }
    renderFleet(fleet);
  }

  function renderFleet(fleet) {
    const {h, t} = ctx;
    // Each level is its own address (#fleet/Subdistrict/Community/Compound): a bookmark or
    // a reload comes back to the same page.
    const hash = "#" + ["fleet", ...fleetPath].map(encodeURIComponent).join("/");
    if (window.location.hash !== hash) history.replaceState(null, "", hash);
    // Walk down the chosen path; a level that vanished ends the walk there.
    let nodes = fleet.subdistricts;
    let level = "subdistrict";
    const crumbs = [h("button", {type: "button", class: "link-button", text: t("fleet_all"),
      onclick: () => { fleetPath.length = 0; loadFleet(); }})];
    const childKey = {subdistrict: "communities", community: "compounds", compound: "gateways"};
    const nextLevel = {subdistrict: "community", community: "compound", compound: "gateway"};
    for (let i = 0; i < fleetPath.length; i++) {
      const node = nodes.find((n) => n.name === fleetPath[i]);
      if (!node) { fleetPath.length = i; break; }
      const depth = i + 1;
      crumbs.push(" › ", h("button", {type: "button", class: "link-button", text: node.name,
        onclick: () => { fleetPath.length = depth; loadFleet(); }}));
      nodes = node[childKey[level]];
      level = nextLevel[level];
    }
    const where = () => {
      const out = {};
      ["subdistrict", "community", "compound"].forEach((k, i) => { if (fleetPath[i]) out[k] = fleetPath[i]; });
      return out;
    };
    const head = level === "gateway"
      ? ["fleet_name", "fleet_state", "fleet_devices_offline", "fleet_open", "fleet_urgent"]
      : ["fleet_name", "fleet_gateways", "fleet_offline", "fleet_devices_offline", "fleet_open", "fleet_urgent"];
    const rows = nodes.map((n) => {
      const c = n.counts;
      // data-label: a phone shows each number with its name (no table header there)
      const cell = (key, value, cls) => h("td", {class: cls || "", "data-label": t(key), text: String(value)});
      const urgent = cell("fleet_urgent", c.unacked_urgent, c.unacked_urgent ? "hot" : "");
      if (level === "gateway") {
        return h("tr", {"data-fleet-row": n.site, "data-state": n.state, class: "gw-" + n.state},
          h("td", {text: `${n.name} (${n.site})`}), cell("fleet_state", t("gw_" + n.state)),
          cell("fleet_devices_offline", `${c.devices_offline}/${c.devices}`),
          cell("fleet_open", c.open_alarms), urgent);
      }
      const name = h("button", {type: "button", class: "link-button", text: n.name,
        onclick: () => { fleetPath.push(n.name); loadFleet(); }});
      return h("tr", {"data-fleet-row": n.name},
        h("td", {}, name), cell("fleet_gateways", c.gateways),
        cell("fleet_offline", c.gateways_offline, c.gateways_offline ? "hot" : ""),
        cell("fleet_devices_offline", `${c.devices_offline}/${c.devices}`),
        cell("fleet_open", c.open_alarms), urgent);
    });
    const toAlarms = h("button", {type: "button", class: "act", text: t("fleet_alarms"), onclick: () => {
      setFilters(where());
      ctx.showTab("alarms");
    }});
    $("tab-fleet").replaceChildren(
      h("nav", {class: "fleet-crumbs", "data-level": level}, ...crumbs, " ", toAlarms),
      h("h2", {text: level === "gateway" ? t("fleet_gateways") : t("lvl_" + level)}),
      h("table", {class: "history fleet", "data-level": level},
        h("thead", {}, h("tr", {}, ...head.map((k) => h("th", {text: t(k)})))),
        h("tbody", {}, ...rows)));
  }

  // ---- setup ----------------------------------------------------------------------

  function init(context) {
    ctx = context;
    const {h, t} = ctx;
    document.body.classList.add("hub");
    $("tab-alarms").prepend(filterBar());
    // New sites and places appear in the filters as their rows do (not in the open one),
    // within half a second: each refill reads every alarm, and a hub's list changes dozens
    // of times a second. (A select is refilled anyway when it is opened.)
    let refillTimer = null;
    let refilledFor = null;
    const refill = () => {
      refillTimer = null;
      // An update never moves an alarm to another place: only alarms raised or closed, and
      // new gateway cards, can change the values (a hub's list changes dozens of times a
      // second, nearly all of them updates).
      const basis = {membership: ctx.state.membership, devices: ctx.state.devices, lang: ctx.state.lang};
      if (refilledFor && Object.keys(basis).every((k) => basis[k] === refilledFor[k])) return;
      refilledFor = basis;
      const known = filterValues();   // (the alarms read again only if some were raised or closed)
      for (const select of document.querySelectorAll("#hub-filters select")) {
        if (select !== document.activeElement) fillOptions(select, known);
      }
    };
    // (app.js says when the list changed: only the rows near the screen are in the DOM.)
    listChanged = () => { refillTimer = refillTimer || setTimeout(refill, 500); };
    $("action-form").insertBefore(h("p", {id: "hub-command", class: "hub-command", role: "status", hidden: true}),
      $("dlg-error"));
    const tab = h("button", {type: "button", role: "tab", "data-tab": "fleet", "aria-selected": "false"},
      h("span", {"data-i18n": "tab_fleet", text: t("tab_fleet")}));
    document.querySelector("nav.tabs").append(tab);
    $("content").append(h("section", {id: "tab-fleet", class: "tab", "aria-label": "fleet", hidden: true}));
    // app.js binds every [data-tab] button to its showTab; the fleet section is shown here.
    if (window.location.hash.startsWith("#fleet")) {
      fleetPath.push(...window.location.hash.split("/").slice(1, 4).map(decodeURIComponent));
      setTimeout(() => tab.click(), 0);   // once app.js has bound the tabs
    }
    document.querySelector("nav.tabs").addEventListener("click", (e) => {
      const button = e.target.closest("[data-tab]");
      if (!button) return;
      $("tab-fleet").hidden = button.dataset.tab !== "fleet";
      clearInterval(fleetTimer);
      if (button.dataset.tab !== "fleet" && window.location.hash) {
        history.replaceState(null, "", window.location.pathname);
      }
      if (button.dataset.tab === "fleet") {
        loadFleet();
        fleetTimer = setInterval(loadFleet, 3000);
      }
    });
  }

  window.cgHub = {init, keep, place, filterKey, commandState, setFilters, listChanged: () => listChanged()};
})();
