// The console's Zones and Digest tabs: arming groups, bypassed inputs, devices out of
// service (arm, disarm, bypass, out of service with a note and an end time), and the
// daily digest of devices that were offline or faulty. Kept apart from app.js: it adds
// its strings, listens to the same tab buttons and shows its own sections.
"use strict";
(function () {
  const POLL_MS = 10000;   // zones change by schedule too: refreshed while the tab is shown

  Object.assign(window.CG_I18N.en, {
    tab_zones: "Zones",
    tab_digest: "Device digest",
    z_groups: "Arming groups",
    z_group: "Group",
    z_schedule: "Schedule",
    z_state: "State",
    z_source: "Set by",
    z_by: "By",
    z_until: "Until",
    z_note: "Note",
    z_since: "Since",
    z_armed: "Armed",
    z_disarmed: "Disarmed",
    z_by_schedule: "schedule",
    z_by_hand: "by hand",
    z_arm: "Arm",
    z_disarm: "Disarm",
    z_bypassed: "Bypassed inputs",
    z_input: "Input",
    z_oos: "Devices out of service",
    z_device: "Device",
    z_end_bypass: "End bypass",
    z_return: "Return to service",
    z_bypass_submit: "Bypass input",
    z_oos_submit: "Take out of service",
    z_none_bypassed: "No input is bypassed.",
    z_none_oos: "No device is out of service.",
    z_no_groups: "No arming groups on this site.",
    z_note_required: "A note is required: say why.",
    z_until_required: "Choose an end time.",
    z_until_default: "until the schedule next changes",
    z_further: "further notice",
    z_dlg_arm: "Arm {group}",
    z_dlg_disarm: "Disarm {group}",
    z_dlg_note: "Note (required)",
    z_dlg_until: "Until (empty: the schedule's next change)",
    z_done: "Done.",
    d_latest: "Latest digest: {from} – {to}",
    d_latest_title: "Latest digest",
    d_none_yet: "No digest made yet today (it is made daily at alarms.digest_at).",
    d_since: "Since the last digest: {from} – now",
    d_clean: "No device was offline or faulty.",
    d_offline_times: "Offline (times)",
    d_offline_minutes: "Offline (min)",
    d_faults: "Faults",
    d_still_open: "Still open",
    d_kind: "Kind",
    d_offline: "offline",
    d_location: "Location",
  });
  Object.assign(window.CG_I18N.zh, {
    tab_zones: "防区",
    tab_digest: "设备日报",
    z_groups: "布防组",
    z_group: "组",
    z_schedule: "时间表",
    z_state: "状态",
    z_source: "设定方式",
    z_by: "操作人",
    z_until: "截止",
    z_note: "备注",
    z_since: "开始",
    z_armed: "已布防",
    z_disarmed: "已撤防",
    z_by_schedule: "按时间表",
    z_by_hand: "手动",
    z_arm: "布防",
    z_disarm: "撤防",
    z_bypassed: "旁路的防区输入",
    z_input: "输入",
    z_oos: "停用的设备",
    z_device: "设备",
    z_end_bypass: "结束旁路",
    z_return: "恢复使用",
    z_bypass_submit: "旁路输入",
    z_oos_submit: "停用设备",
    z_none_bypassed: "没有旁路的输入。",
    z_none_oos: "没有停用的设备。",
    z_no_groups: "本小区没有布防组。",
    z_note_required: "必须填写备注，说明原因。",
    z_until_required: "请选择截止时间。",
    z_until_default: "到时间表下次切换",
    z_further: "另行通知",
    z_dlg_arm: "布防 {group}",
    z_dlg_disarm: "撤防 {group}",
    z_dlg_note: "备注（必填）",
    z_dlg_until: "截止（留空：时间表下次切换）",
    z_done: "已完成。",
    d_latest: "最近日报：{from} – {to}",
    d_latest_title: "最近日报",
    d_none_yet: "今天还没有日报（每天在 alarms.digest_at 生成）。",
    d_since: "自上次日报以来：{from} – 现在",
    d_clean: "没有设备离线或故障。",
    d_offline_times: "离线次数",
    d_offline_minutes: "离线（分钟）",
    d_faults: "故障",
    d_still_open: "仍未恢复",
    d_kind: "类型",
    d_offline: "离线",
    d_location: "位置",
  });

  const z = {me: null, tab: null, data: null, digest: null, timer: null, dialog: null};
  const $ = (id) => document.getElementById(id);
  const lang = () => (document.documentElement.lang || "en").startsWith("zh") ? "zh" : "en";
  const t = (key, vars) => window.cgTranslate(lang(), key, vars);
  const canAct = () => z.me && z.me.role === "operator";

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  async function api(path, body) {
    const opts = {credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = z.me ? z.me.csrf : "";
      opts.body = JSON.stringify(body);
    }
    const response = await fetch(path, opts);
    if (response.status === 401) {
      window.location.replace("/console/login");
      throw new Error("login required");
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }

  // ---- times ----------------------------------------------------------------------

  function when(value) {   // epoch seconds or ISO text -> the browser's local time
    if (value === null || value === undefined) return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  function localInput(date) {   // a Date -> the value of an <input type="datetime-local">
    const pad = (n) => String(n).padStart(2, "0");
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  function isoOf(inputValue) {   // the browser's local time -> ISO 8601 with a zone (UTC)
    if (!inputValue) return null;
    const date = new Date(inputValue);
    return isNaN(date.getTime()) ? null : date.toISOString();
  }

  // ---- zones ----------------------------------------------------------------------

  async function loadZones() {
    try {
      z.data = await api("/console/api/zones");
      $("zones-error").hidden = true;
    } catch (err) {
      $("zones-error").textContent = err.message;
      $("zones-error").hidden = false;
    }
    renderZones();
  }

  function renderZones() {
    const data = z.data;
    if (!data) return;
    const groups = $("zone-groups");
    groups.replaceChildren(...data.groups.map(groupRow));
    $("zone-groups-empty").hidden = data.groups.length > 0;
    $("zone-bypassed").replaceChildren(...data.bypassed.map(bypassRow));
    $("zone-bypassed-empty").hidden = data.bypassed.length > 0;
    $("zone-oos").replaceChildren(...data.out_of_service.map(oosRow));
    $("zone-oos-empty").hidden = data.out_of_service.length > 0;
    fillDevices();
  }

  function groupRow(g) {
    const manual = g.source === "manual";
    return h("tr", {"data-group": g.id, "data-armed": String(g.armed)},
      h("td", {class: "z-name"}, g.name, g.name !== g.id ? h("div", {class: "sub", text: g.id}) : null),
      h("td", {class: "z-schedule", text: g.schedule || ""}),
      h("td", {class: "z-state"}, h("span", {class: g.armed ? "z-badge z-armed" : "z-badge z-disarmed",
                                             text: t(g.armed ? "z_armed" : "z_disarmed")})),
      h("td", {class: "z-source", text: t(manual ? "z_by_hand" : "z_by_schedule")}),
      h("td", {class: "z-by", text: manual ? g.by : ""}),
      h("td", {class: "z-until", text: manual ? (g.until ? when(g.until) : t("z_further")) : ""}),
      h("td", {class: "z-note", text: manual ? g.note : ""}),
      h("td", {class: "z-actions only-operator"},
        canAct() ? h("button", {type: "button", class: g.armed ? "z-disarm" : "z-arm primary",
                               text: t(g.armed ? "z_disarm" : "z_arm"),
                               onclick: () => openArm(g, !g.armed)}) : null));
  }

  function bypassRow(b) {
    const [device, channel] = b.input.split(":");
    return h("tr", {"data-input": b.input},
      h("td", {class: "z-input"}, b.input, b.name ? h("div", {class: "sub z-input-name", text: b.name}) : null),
      h("td", {class: "z-by", text: b.by}),
      h("td", {class: "z-note", text: b.note}),
      h("td", {class: "z-since", text: when(b.since)}),
      h("td", {class: "z-until", text: when(b.until)}),
      h("td", {class: "z-actions only-operator"},
        canAct() ? h("button", {type: "button", class: "z-end", text: t("z_end_bypass"),
                               onclick: () => change("end_bypass", {device, channel: Number(channel)})})
          : null));
  }

  function oosRow(o) {
    return h("tr", {"data-device": o.device},
      h("td", {class: "z-device", text: o.device}),
      h("td", {class: "z-by", text: o.by}),
      h("td", {class: "z-note", text: o.note}),
      h("td", {class: "z-since", text: when(o.since)}),
      h("td", {class: "z-until", text: when(o.until)}),
      h("td", {class: "z-actions only-operator"},
        canAct() ? h("button", {type: "button", class: "z-end", text: t("z_return"),
                               onclick: () => change("return_to_service", {device: o.device})})
          : null));
  }

  function fillDevices() {   // the forms' device pickers, kept if the choice still exists
    const devices = (z.data && z.data.devices) || [];
    for (const [id, withInputs] of [["bypass-device", true], ["oos-device", false]]) {
      const select = $(id);
      const chosen = select.value;
      const options = devices.filter((d) => !withInputs || d.inputs > 0)
        .map((d) => h("option", {value: d.id, "data-inputs": d.inputs, text: `${d.id} (${d.kind})`}));
      select.replaceChildren(...options);
      if (devices.some((d) => d.id === chosen)) select.value = chosen;
    }
    limitChannel();
  }

  function limitChannel() {   // the input's range, and its name as the site file gives it
    const option = $("bypass-device").selectedOptions[0];
    const max = option ? Number(option.dataset.inputs) : 0;
    $("bypass-channel").max = max > 0 ? String(max) : "";
    const device = ((z.data && z.data.devices) || []).find((d) => option && d.id === option.value);
    $("bypass-channel-name").textContent = (device && device.names[$("bypass-channel").value]) || "";
  }

  async function change(action, body) {
    try {
      z.data = await api("/console/api/zones/" + action, body);
      renderZones();
      toast(t("z_done"));
      return null;
    } catch (err) {
      return err.message;
    }
  }

  function showFormError(id, message) {
    $(id).textContent = message || "";
    $(id).hidden = !message;
  }

  async function submitBypass(event) {
    event.preventDefault();
    const note = $("bypass-note").value.trim();
    const until = isoOf($("bypass-until").value);
    if (!note) return showFormError("bypass-error", t("z_note_required"));
    if (!until) return showFormError("bypass-error", t("z_until_required"));
    const problem = await change("bypass", {device: $("bypass-device").value,
                                            channel: Number($("bypass-channel").value), note, until});
    showFormError("bypass-error", problem);
    if (!problem) $("bypass-note").value = "";
  }

  async function submitOos(event) {
    event.preventDefault();
    const note = $("oos-note").value.trim();
    const until = isoOf($("oos-until").value);
    if (!note) return showFormError("oos-error", t("z_note_required"));
    if (!until) return showFormError("oos-error", t("z_until_required"));
    const problem = await change("out_of_service", {device: $("oos-device").value, note, until});
    showFormError("oos-error", problem);
    if (!problem) $("oos-note").value = "";
  }

  function openArm(group, arm) {
    z.dialog = {group: group.id, arm};
    $("zone-dlg-title").textContent = t(arm ? "z_dlg_arm" : "z_dlg_disarm", {group: group.name});
    $("zone-dlg-note").value = "";
    $("zone-dlg-until").value = "";
    showFormError("zone-dlg-error", "");
    $("zone-dialog").showModal();
    $("zone-dlg-note").focus();
  }

  async function confirmArm(event) {
    event.preventDefault();
    const note = $("zone-dlg-note").value.trim();
    if (!note) return showFormError("zone-dlg-error", t("z_note_required"));
    const body = {group: z.dialog.group, note};
    const until = isoOf($("zone-dlg-until").value);
    if (until) body.until = until;
    const problem = await change(z.dialog.arm ? "arm" : "disarm", body);
    showFormError("zone-dlg-error", problem);
    if (!problem) $("zone-dialog").close();
  }

  function toast(text) {
    const el = $("toast");
    if (!el) return;
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 2500);
  }

  // ---- digest ---------------------------------------------------------------------

  async function loadDigest() {
    try {
      z.digest = await api("/console/api/digest");
      $("digest-error").hidden = true;
    } catch (err) {
      $("digest-error").textContent = err.message;
      $("digest-error").hidden = false;
    }
    renderDigest();
  }

  function renderDigest() {
    const d = z.digest;
    if (!d) return;
    $("digest-since").replaceChildren(...digestBlock(d.since, "d_since", "digest-since-table"));
    $("digest-latest").replaceChildren(...(d.latest ? digestBlock(d.latest, "d_latest", "digest-latest-table")
      : [h("h2", {text: t("d_latest_title")}),
         h("p", {class: "empty", text: t("d_none_yet")})]));
  }

  function troubleText(rule) {   // device_offline, device_fault:<fault> -> words
    if (rule === "device_offline") return t("d_offline");
    return rule.replace(/^device_fault:/, "").replace(/_/g, " ");
  }

  function digestBlock(digest, titleKey, tableId) {
    const title = h("h2", {text: t(titleKey, {from: when(digest.from), to: when(digest.to)})});
    if (!digest.devices.length) return [title, h("p", {class: "empty", text: t("d_clean")})];
    const head = ["z_device", "d_kind", "d_location", "d_offline_times", "d_offline_minutes",
                  "d_faults", "d_still_open"].map((k) => h("th", {text: t(k)}));
    const rows = digest.devices.map((dev) => h("tr", {"data-device": dev.device},
      h("td", {text: dev.device}),
      h("td", {text: dev.kind}),
      h("td", {text: Object.values(dev.location || {}).join(" · ")}),
      h("td", {class: "d-offline-times", text: String(dev.offline_times)}),
      h("td", {class: "d-offline-minutes", text: String(dev.offline_minutes)}),
      h("td", {class: "d-faults", text: Object.entries(dev.faults || {}).map(([f, n]) => `${f} ×${n}`).join(", ")}),
      h("td", {class: "d-open", text: Object.entries(dev.still_open || {})
        .map(([rule, since]) => `${troubleText(rule)} (${t("z_since").toLowerCase()} ${when(since)})`)
        .join(", ")})));
    return [title, h("table", {class: "history", id: tableId}, h("thead", {}, h("tr", {}, ...head)),
                     h("tbody", {}, ...rows))];
  }

  // ---- tabs -----------------------------------------------------------------------

  function show(tab) {   // app.js hides its own sections for a tab it does not know
    z.tab = tab;
    $("tab-zones").hidden = tab !== "zones";
    $("tab-digest").hidden = tab !== "digest";
    clearInterval(z.timer);
    z.timer = null;
    const load = tab === "zones" ? loadZones : tab === "digest" ? loadDigest : null;
    if (load) {
      load();
      z.timer = setInterval(() => { if (!document.hidden) load(); }, POLL_MS);
    }
  }

  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => show(button.dataset.tab));
  }

  async function start() {
    z.me = await api("/console/api/me");
    $("lang").addEventListener("click", () => setTimeout(() => { renderZones(); renderDigest(); }, 0));
    $("bypass-device").addEventListener("change", limitChannel);
    $("bypass-channel").addEventListener("input", limitChannel);
    $("bypass-form").addEventListener("submit", submitBypass);
    $("oos-form").addEventListener("submit", submitOos);
    $("zone-dlg-form").addEventListener("submit", confirmArm);
    $("zone-dlg-cancel").addEventListener("click", () => $("zone-dialog").close());
    const later = localInput(new Date(Date.now() + 8 * 3600 * 1000));   // a shift ahead
    $("bypass-until").value = later;
    $("oos-until").value = later;
    if (z.me.role !== "operator") {
      for (const form of document.querySelectorAll(".zone-form")) form.hidden = true;
    }
    if (z.tab === "zones") renderZones();   // the buttons need the role
  }

  start().catch(() => { /* app.js shows the link as lost and reloads */ });
})();
