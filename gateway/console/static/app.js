// The security-room console: live alarms over server-sent events, devices, history.
// Plain JavaScript, no build step. Everything the gateway sends is put into the page
// with textContent (never as HTML).
"use strict";
(function () {
  const LEVEL1 = 1;
  const WATCHDOG_MS = 25000;   // the server pings every 10 s; silence this long means a dead link
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 5000;

  const state = {
    me: null,
    lang: "en",
    alarms: new Map(),         // id -> alarm JSON
    devices: [],
    live: false,
    lostAt: null,
    instance: null,
    version: document.body.dataset.version,
    offset: 0,                 // server clock minus this browser's clock, seconds
    tab: "alarms",
    source: null,
    lastMessage: 0,
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    renderQueued: false,
    dirty: {alarms: false, devices: false},
    rows: new Map(),           // alarm id -> {alarm, view, el} of the rows in the DOM: unchanged ones are kept, so a click is never lost
    dialog: null,              // {action, alarm}
    alarmWindow: null,         // the alarm list (windowed-list.js): only the rows near the screen are in the DOM
    order: null,               // the alarms shown, sorted, as last drawn (null: sort them all again)
    orderFilter: "",           // the hub's filters that order was made with
    changed: new Set(),        // ids of alarms changed or closed since: moved in the order one by one
    membership: 0,             // counts alarms raised and closed (not updates): the hub's filters refill on it
    alerting: new Set(),       // ids of the alarms sounding: urgent, unacknowledged, not shelved
  };

  const $ = (id) => document.getElementById(id);
  const t = (key, vars) => window.cgTranslate(state.lang, key, vars);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key.startsWith("data-")) el.dataset[camel(key.slice(5))] = value;
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const camel = (s) => s.replace(/-(\w)/g, (m, c) => c.toUpperCase());

  // ---- server calls ---------------------------------------------------------------

  async function api(path, options) {
    const opts = Object.assign({credentials: "same-origin", headers: {}}, options || {});
    if (opts.method === "POST") {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = state.me ? state.me.csrf : "";
    }
    const response = await fetch(path, opts);
    if (response.status === 401) {
      window.location.replace("/console/login");
      throw new Error("login required");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = new Error(body.error || response.statusText);
      err.state = body.state;   // the hub: "not_delivered" or "refused"
      throw err;
    }
    return body;
  }

  // ---- live stream ---------------------------------------------------------------

  function connect() {
    clearTimeout(state.retryTimer);
    const source = new EventSource("/console/events");
    state.source = source;
    source.addEventListener("hello", (e) => {
      const hello = JSON.parse(e.data);
      if (hello.version !== state.version) {   // the gateway has newer page files
        window.location.reload();
        return;
      }
      state.offset = hello.server_time - Date.now() / 1000;
      state.instance = hello.instance;
      heard();
    });
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      state.alarms = new Map(snap.alarms.map((a) => [a.id, a]));
      state.alerting = new Set();
      for (const a of state.alarms.values()) noteAlerting(a, false);
      state.order = null;
      state.membership += 1;
      state.devices = snap.devices;
      heard();
      setLive(true);
      state.retryMs = RETRY_MIN_MS;
      render();
    });
    source.addEventListener("alarm", (e) => {
      const transition = JSON.parse(e.data);
      const alarm = transition.alarm;
      if (transition.event === "closed" || !state.alarms.has(alarm.id)) state.membership += 1;
      if (transition.event === "closed") state.alarms.delete(alarm.id);
      else state.alarms.set(alarm.id, alarm);
      noteAlerting(alarm, transition.event === "closed");
      state.changed.add(alarm.id);
      heard();
      updateAlert();   // at once, even if the tab is in the background
      render("alarms");
      if (state.tab === "history") loadHistory();
    });
    source.addEventListener("devices", (e) => {
      state.devices = JSON.parse(e.data).devices;
      heard();
      render("devices");
    });
    source.addEventListener("auth", () => {
      source.close();
      window.location.replace("/console/login");
    });
    source.addEventListener("message", heard);
    source.onerror = () => lost();
  }

  function heard() {
    state.lastMessage = Date.now();
  }

  // The stream broke (gateway stopped, network gone, watchdog): show it, try again.
  function lost() {
    if (state.source) state.source.close();
    state.source = null;
    setLive(false);
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(reconnect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  }

  async function reconnect() {
    try {
      // A restarted gateway may have lost the session; /api/me says so (401 -> login).
      state.me = await api("/console/api/me");
      connect();
    } catch (err) {
      lost();
    }
  }

  function setLive(live) {
    if (live === state.live) return;
    state.live = live;
    if (!live) state.lostAt = state.lostAt || new Date();
    else state.lostAt = null;
    renderLive();
  }

  function renderLive() {
    const el = $("live");
    el.dataset.live = state.live ? "yes" : "no";
    el.textContent = state.live ? "● " + t("live") : "○ " + t("not_live");
    document.body.classList.toggle("stale", !state.live);
    const banner = $("offline-banner");
    banner.hidden = state.live || !state.lostAt;
    if (state.lostAt) banner.textContent = t("not_live_banner", {time: clockText(state.lostAt)});
  }

  // ---- audible alert ---------------------------------------------------------------

  const sound = {ctx: null, node: null, buffer: null, resuming: false};

  // Level 1 (and 0, which only escalation reaches) sounds until acknowledged or shelved.
  function isUrgent(alarm) {
    return alarm.severity <= LEVEL1;
  }

  // The alarms sounding, kept as each message comes (the stream's handlers note them; a hub has
  // thousands open and a dozen messages a frame: not a filter of them all every time).
  function alertingAlarms() {
    const out = [];
    for (const id of state.alerting) {
      const a = state.alarms.get(id);
      if (a) out.push(a);
    }
    return out;
  }

  function noteAlerting(alarm, closed) {
    if (!closed && isUrgent(alarm) && !alarm.acked && !isShelved(alarm)) state.alerting.add(alarm.id);
    else state.alerting.delete(alarm.id);
  }

  function isShelved(alarm) {
    return Boolean(alarm.shelved_until);
  }

  // The newest few, then a count: with hundreds unacknowledged, a banner naming every one
  // would cover the screen (and cost a restyle of the whole page per update); the list below
  // holds them all, urgent first.
  const BANNER_NAMED = 3;

  function bannerText(urgent) {
    const newest = urgent.length <= BANNER_NAMED ? urgent : newestOf(urgent, BANNER_NAMED);
    const text = newest.map((a) => a.message).join(" · ");
    const more = urgent.length - newest.length;
    return more > 0 ? text + " · " + t("more_alarms", {n: more}) : text;
  }

  // The n newest (by last_ts, newest first) in one pass: this runs on every message, and a
  // hub can have a thousand urgent alarms unacknowledged (sorting them all cost a few ms each
  // time). ISO times of one format compare as text.
  function newestOf(alarms, n) {
    const top = [];
    for (const a of alarms) {
      const ts = String(a.last_ts);
      if (top.length === n && ts <= String(top[n - 1].last_ts)) continue;
      let i = top.length;
      while (i > 0 && ts > String(top[i - 1].last_ts)) i--;
      top.splice(i, 0, a);
      if (top.length > n) top.pop();
    }
    return top;
  }

  function updateAlert() {
    const urgent = alertingAlarms();
    const on = urgent.length > 0;
    document.body.dataset.alert = on ? "on" : "off";
    const banner = $("alert-banner");
    banner.hidden = !on;
    if (on) setText(banner, t("sounding") + "  " + bannerText(urgent));
    if (on) startSound(); else stopSound();
    const audible = Boolean(sound.node && sound.ctx && sound.ctx.state === "running");
    $("sound-banner").hidden = !on || audible;
    setText($("sound-banner"), t("sound_blocked"));
    document.body.dataset.sound = audible ? "playing" : on ? "blocked" : "silent";
  }

  // A two-tone beep every 1.6 s, looped by the audio thread so timer throttling in a
  // background tab cannot delay it.
  function beepBuffer(ctx) {
    const rate = ctx.sampleRate;
    const buffer = ctx.createBuffer(1, Math.round(rate * 1.6), rate);
    const data = buffer.getChannelData(0);
    const tone = (start, length, freq) => {
      const from = Math.round(start * rate), n = Math.round(length * rate);
      for (let i = 0; i < n; i++) {
        const envelope = Math.min(1, i / (0.01 * rate), (n - i) / (0.01 * rate));
        data[from + i] = 0.5 * envelope * Math.sin(2 * Math.PI * freq * i / rate);
      }
    };
    tone(0, 0.25, 880);
    tone(0.35, 0.25, 660);
    return buffer;
  }

  function startSound() {
    try {
      if (!sound.ctx) sound.ctx = new (window.AudioContext || window.webkitAudioContext)();
      if (sound.ctx.state === "suspended" && !sound.resuming) {
        // Settles once the browser lets the page play (after a click), then shows it.
        sound.resuming = true;
        sound.ctx.resume().then(() => { sound.resuming = false; updateAlert(); },
          () => { sound.resuming = false; });
      }
      if (sound.node) return;
      sound.buffer = sound.buffer || beepBuffer(sound.ctx);
      const node = sound.ctx.createBufferSource();
      node.buffer = sound.buffer;
      node.loop = true;
      node.connect(sound.ctx.destination);
      node.start();
      sound.node = node;
    } catch (err) {
      sound.node = null;   // no audio device: the banner and the flashing row still show it
    }
  }

  function stopSound() {
    if (sound.node) {
      try { sound.node.stop(); } catch (err) { /* already stopped */ }
      sound.node.disconnect();
      sound.node = null;
    }
  }

  // Browsers allow sound only after the user touched the page.
  function unlockSound() {
    if (sound.ctx && sound.ctx.state === "suspended") sound.ctx.resume().then(updateAlert, () => {});
    else if (alertingAlarms().length) updateAlert();
  }

  // ---- rendering -------------------------------------------------------------------

  // Redraw what changed ("alarms", "devices"; nothing named: both), once per burst.
  function render(what) {
    if (what) state.dirty[what] = true;
    else state.dirty.alarms = state.dirty.devices = true;
    if (state.renderQueued) return;
    state.renderQueued = true;
    const draw = () => {
      if (!state.renderQueued) return;
      state.renderQueued = false;
      if (state.dirty.alarms) renderAlarms();
      if (state.dirty.devices) renderDevices();
      state.dirty.alarms = state.dirty.devices = false;
      updateAlert();
    };
    // Once per frame on a visible page: every message that came in since is drawn at once
    // (a hub sends dozens a second, and one list rebuild each cost more than a frame). A
    // background tab gets no frames: the timer draws it there, whichever comes first.
    if (!document.hidden) requestAnimationFrame(draw);
    setTimeout(draw, document.hidden ? 0 : 100);
  }

  // ---- the hub (many sites): hooks into static/hub.js, only when /api/me says hub ----
  const hub = () => Boolean(state.me && state.me.hub && window.cgHub);

  // Most urgent level first; inside a level the newest first; shelved ones last.
  function compareAlarms(x, y) {
    return (isShelved(x) - isShelved(y)) || (x.severity - y.severity) || (lastTime(y) - lastTime(x));
  }

  function sortedAlarms() {
    const keep = hub() ? window.cgHub.keep : null;
    const filter = hub() && window.cgHub.filterKey ? window.cgHub.filterKey() : "";
    const changed = state.changed;
    state.changed = new Set();
    if (state.order && state.orderFilter === filter && changed.size <= 64) {
      // A few alarms changed since the last frame (a hub: dozens a second among thousands):
      // those move, by binary search, instead of sorting thousands again every frame.
      if (!changed.size) return state.order;
      const order = state.order.filter((a) => !changed.has(a.id));
      for (const id of changed) {
        const a = state.alarms.get(id);
        if (!a || (keep && !keep(a))) continue;
        let lo = 0, hi = order.length;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (compareAlarms(order[mid], a) <= 0) lo = mid + 1; else hi = mid;
        }
        order.splice(lo, 0, a);
      }
      state.order = order;
      return order;
    }
    // The keys are computed once per alarm, not per comparison (thousands of alarms on a hub).
    const shown = keep ? [...state.alarms.values()].filter(keep) : [...state.alarms.values()];
    const keyed = shown.map((a) => [isShelved(a), a.severity, lastTime(a), a]);
    keyed.sort((x, y) => (x[0] - y[0]) || (x[1] - y[1]) || (y[2] - x[2]));
    state.order = keyed.map((k) => k[3]);
    state.orderFilter = filter;
    return state.order;
  }

  // An alarm object's last_ts parsed once (a new message is a new object): the list is
  // sorted every frame that brings a message.
  const parsedLast = new WeakMap();
  function lastTime(a) {
    let ms = parsedLast.get(a);
    if (ms === undefined) { ms = Date.parse(a.last_ts); parsedLast.set(a, ms); }
    return ms;
  }

  function canAct(action) {
    return Boolean(state.me && ["operator", "admin"].includes(state.me.role) && state.me.actions.includes(action));
  }

  function renderAlarms() {
    const alarms = sortedAlarms();
    $("alarm-count").textContent = String(alarms.length);
    $("alarm-count").classList.toggle("hot", alertingAlarms().length > 0);
    $("no-alarms").hidden = alarms.length > 0;
    if (!state.alarmWindow) {
      state.alarmWindow = window.cgWindowedList($("alarm-list"), {key: (a) => a.id, rowFor, removed: rowRemoved});
    }
    state.alarmWindow.show(alarms);   // builds (rowFor) only the rows near the screen
    if (hub() && window.cgHub.listChanged) window.cgHub.listChanged();
  }

  // The row for an alarm in the window. The same alarm object (no message about it since) is
  // the same row; a new object (an update, a snapshot) is compared by content, so only a real
  // change rebuilds it.
  function rowFor(a) {
    const view = state.lang + "|" + (state.me ? state.me.role : "");
    const old = state.rows.get(a.id);
    if (old && old.view === view && (old.alarm === a || (old.sig || rowSig(old)) === rowSig({alarm: a}))) {
      old.alarm = a;
      return old.el;
    }
    const row = {alarm: a, view, el: alarmRow(a)};
    state.rows.set(a.id, row);
    return row.el;
  }

  // A row out of the DOM (scrolled away, rebuilt, closed): forgotten; built again when needed.
  function rowRemoved(el) {
    const row = state.rows.get(el.dataset.alarmId);
    if (row && row.el === el) state.rows.delete(el.dataset.alarmId);
  }

  function rowSig(row) {
    row.sig = JSON.stringify(row.alarm);
    return row.sig;
  }

  function alarmRow(a) {
    const shelved = isShelved(a);
    const row = h("article", {
      class: `alarm sev-${a.severity}` + (a.acked ? " acked" : " unacked") + (shelved ? " shelved" : "")
        + (a.state === "cleared" ? " cleared" : ""),
      "data-alarm-id": a.id, "data-severity": String(a.severity), "data-state": a.state,
      "data-acked": a.acked ? "yes" : "no",
    });
    row.append(
      h("div", {class: "c-level"}, h("span", {class: "level", text: t("level", {n: a.severity})}),
        h("span", {class: "level-name", text: t("level_" + a.severity)})),
      h("div", {class: "c-alarm"}, h("div", {class: "message", text: a.message}),
        h("div", {class: "sub", text: `${a.rule} · ${a.device}`})),
      h("div", {class: "c-location", text: [hub() ? window.cgHub.place(a) : "", alarmPlace(a)]
        .filter(Boolean).join(state.lang === "zh" ? " " : " · ")}),
      h("div", {class: "c-value", "data-label": t("col_value"), text: alarmValue(a)}),
      h("div", {class: "c-count", "data-label": t("col_count"), text: "×" + a.count}),
      h("div", {class: "c-state"}, stateBadges(a)),
      h("div", {class: "c-age age", "data-label": t("col_age"), "data-since": a.first_ts,
        text: ageText(a.first_ts)}),
    );
    const buttons = h("div", {class: "c-actions"});
    if (!a.acked && canAct("ack")) buttons.append(actionButton("ack", a, "primary"));
    // A latched alarm ends by a reset, once its condition is gone.
    if (a.latched && !a.condition && canAct("reset")) buttons.append(actionButton("reset", a, "primary"));
    if (!shelved && canAct("shelve")) buttons.append(actionButton("shelve", a));
    if (shelved && canAct("unshelve")) buttons.append(actionButton("unshelve", a));
    if (buttons.childElementCount) row.append(buttons);
    for (const cell of row.children) cell.setAttribute("role", "cell");   // the row is a table's (windowed-list.js)
    return row;
  }

  function stateBadges(a) {
    const box = h("span", {class: "badges"});
    box.append(h("span", {class: `badge st-${a.state}`, text: t("state_" + a.state)}));
    box.append(h("span", {class: "badge " + (a.acked ? "ok" : "warn"), text: t(a.acked ? "acked" : "unacked")}));
    if (a.latched) box.append(h("span", {class: "badge", text: t(a.condition ? "latched" : "reset_needed")}));
    if (a.escalated) box.append(h("span", {class: "badge warn", text: t("escalated", {n: a.escalated})}));
    if (isShelved(a)) {
      box.append(h("span", {class: "badge", text: t("shelved_until", {time: clockText(new Date(a.shelved_until))})}));
    }
    return box;
  }

  function actionButton(action, alarm, extra) {
    return h("button", {type: "button", class: "act " + (extra || ""), "data-action": action,
      text: t("act_" + action), onclick: () => openDialog(action, alarm)});
  }

  function locationText(location) {
    if (!location) return "";
    const order = ["building", "unit", "floor", "room"];
    const keys = Object.keys(location).sort((x, y) => {
      const ix = order.indexOf(x), iy = order.indexOf(y);
      return (ix < 0 ? 99 : ix) - (iy < 0 ? 99 : iy);
    });
    return keys.map((k) => {
      const key = "loc_" + k;
      const known = window.CG_I18N.en[key] !== undefined;
      return t(known ? key : "loc_other", {k, v: location[k]});
    }).join(state.lang === "zh" ? " " : " · ");
  }

  // Where an alarm is: the device's location, and for a throw the facade and the floors
  // the camera saw it come from (in the event's details).
  function alarmPlace(a) {
    const parts = [locationText(a.location)];
    const d = a.details || {};
    if (d.facade) {
      const dir = "dir_" + d.facade;   // east, west... in the page's language where known
      parts.push(t("loc_facade", {v: window.CG_I18N[state.lang][dir] !== undefined ? t(dir) : d.facade}));
    }
    if (d.floor_low !== undefined && d.floor_low !== null) {
      const lo = d.floor_low, hi = d.floor_high === undefined || d.floor_high === null ? lo : d.floor_high;
      parts.push(lo === hi ? t("loc_floor", {v: lo}) : t("loc_floors", {a: lo, b: hi}));
    }
    return parts.filter(Boolean).join(state.lang === "zh" ? " " : " · ");
  }

  // The reading that raised the alarm, with its unit, while its condition holds; nothing
  // for yes/no conditions (smoke, a fall) and events, and nothing once it cleared (the
  // value then is the one that cleared it, e.g. 0 W after the cut).
  function alarmValue(a) {
    const meta = state.me && state.me.values ? state.me.values[a.rule] : null;
    if (!meta || !a.condition || typeof a.value !== "number") return "";
    return valueText(a.value) + (meta.unit ? " " + meta.unit : "");
  }

  function kindText(kind) {
    const key = "kind_" + kind;
    return window.CG_I18N.en[key] !== undefined ? t(key) : String(kind).replace(/_/g, " ");
  }

  function valueText(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number") return String(value);
    return Math.abs(value) >= 1000 || Number.isInteger(value) ? String(Math.round(value * 10) / 10)
      : value.toPrecision(4).replace(/\.?0+$/, "");
  }

  function serverNow() {
    return Date.now() / 1000 + state.offset;
  }

  function ageText(iso) {
    const s = Math.max(0, Math.floor(serverNow() - Date.parse(iso) / 1000));
    if (s < 60) return t("age_s", {s});
    if (s < 3600) return t("age_m", {m: Math.floor(s / 60), s: s % 60});
    if (s < 86400) return t("age_h", {h: Math.floor(s / 3600), m: Math.floor(s / 60) % 60});
    return t("age_d", {d: Math.floor(s / 86400), h: Math.floor(s / 3600) % 24});
  }

  function clockText(date) {
    const p = (n) => String(n).padStart(2, "0");
    return `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
  }

  function dateTimeText(iso) {
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${clockText(d)}`;
  }

  const NATURAL = new Intl.Collator(undefined, {numeric: true});   // "2" before "10"; one for every comparison

  function renderDevices() {
    updateDeviceCount();
    if (state.tab !== "devices") return;
    const byBuilding = new Map();
    for (const d of state.devices) {
      const b = (d.location && d.location.building) || "";
      if (!byBuilding.has(b)) byBuilding.set(b, []);
      byBuilding.get(b).push(d);
    }
    const buildings = [...byBuilding.keys()].sort(NATURAL.compare);
    $("device-list").replaceChildren(...buildings.map((b) => {
      const devices = byBuilding.get(b);
      const online = devices.filter((d) => d.online === true).length;
      return h("section", {class: "building"},
        h("h2", {}, b ? t("loc_building", {v: b}) : t("no_building"),
          h("span", {class: "sub", text: "  " + t("dev_count", {online, total: devices.length})})),
        h("div", {class: "device-grid"}, ...devices.map(deviceCard)));
    }));
  }

  function updateDeviceCount() {
    const online = state.devices.filter((d) => d.online === true).length;
    const el = $("device-count");
    el.textContent = `${online}/${state.devices.length}`;
    el.classList.toggle("hot", online < state.devices.length);
  }

  function deviceCard(d) {
    const status = d.online === true ? "online" : d.online === false ? "offline" : "unknown";
    const where = Object.assign({}, d.location || {});
    delete where.building;
    const wideCard = d.readings.some((r) => r.channel !== null);
    const card = h("article", {class: `device ${status}` + (wideCard ? " wide" : ""), "data-device": d.id,
      "data-online": status},
      h("header", {},
        h("span", {class: "dot", "aria-hidden": "true"}),
        h("button", {type: "button", class: "device-open", text: d.id, title: t("chart_open"),
          onclick: () => openDevice(d.id)}),
        h("span", {class: "badge " + (status === "online" ? "ok" : status === "offline" ? "warn" : ""),
          text: t("dev_" + status)})),
      h("div", {class: "sub", text: [kindText(d.kind), locationText(where)].filter(Boolean).join(" · ")}),
      h("div", {class: "sub", text: [d.last_success ? t("dev_last", {age: ageText(d.last_success)}) : t("dev_never"),
        d.errors ? t("dev_errors", {n: d.errors}) : ""].filter(Boolean).join(" · ")}),
    );
    if (d.online === false && d.last_error) card.append(h("div", {class: "error-text", text: d.last_error}));
    const wide = d.readings.find((r) => r.channel === null);
    if (wide) {
      card.append(h("div", {class: "device-values"}, ...Object.entries(wide.values).map(([k, v]) =>
        h("span", {class: "kv"}, h("span", {class: "k", text: k.replace(/_/g, " ")}), " ",
          h("b", {text: valueText(v)})))));
    }
    const rows = d.readings.filter((r) => r.channel !== null);
    if (rows.length) {
      // One row per channel (port, door), one column per field.
      const fields = [...new Set(rows.flatMap((r) => Object.keys(r.values)))];
      const channelLabel = (n) => t(window.CG_I18N.en["loc_" + d.channel_name] ? "loc_" + d.channel_name
        : "loc_other", {k: d.channel_name, v: n});
      card.append(h("div", {class: "readings-wrap"}, h("table", {class: "readings"},
        h("thead", {}, h("tr", {}, h("th", {}), ...fields.map((f) => h("th", {text: f.replace(/_/g, " ")})))),
        h("tbody", {}, ...rows.map((r) => h("tr", {}, h("th", {text: channelLabel(r.channel)}),
          ...fields.map((f) => h("td", {text: valueText(r.values[f])}))))))));
    }
    return card;
  }

  // ---- a device's page: its last hour as a chart (an SVG the gateway draws) ---------

  const CHART_FIRST = ["power", "temperature", "cabinet_temperature", "body_movement", "door_open"];
  let chartTimer = null;

  function openDevice(id) {
    const d = state.devices.find((x) => x.id === id);
    if (!d) return;
    const fields = [...new Set(d.readings.flatMap((r) => Object.keys(r.values)))];
    fields.sort((a, b) => rank(a) - rank(b));
    $("dev-title").textContent = d.id;
    $("dev-sub").textContent = [kindText(d.kind), locationText(d.location)].filter(Boolean).join(" · ");
    $("dev-field").replaceChildren(...fields.map((f) => h("option", {value: f, text: f.replace(/_/g, " ")})));
    $("dev-field").onchange = () => showChart(d.id);
    $("device-dialog").dataset.device = d.id;
    showChart(d.id);
    clearInterval(chartTimer);
    chartTimer = setInterval(() => showChart(d.id), 10000);
    $("device-dialog").showModal();
  }

  function rank(field) {
    const i = CHART_FIRST.indexOf(field);
    return i < 0 ? CHART_FIRST.length : i;
  }

  function showChart(id) {
    const field = $("dev-field").value;
    if (!field) { $("dev-chart").removeAttribute("src"); return; }
    $("dev-chart").alt = t("chart_title", {field: field.replace(/_/g, " "), channel: id, minutes: 60});
    $("dev-chart").src = `/console/api/devices/${encodeURIComponent(id)}/chart.svg?field=${encodeURIComponent(field)}`
      + `&lang=${state.lang}&t=${Date.now()}`;
  }

  function tickAges() {
    // Only the rows near the screen are in the DOM (the list is windowed): a row's age is
    // written when it is built, and every second while it is there.
    for (const el of document.querySelectorAll(".age[data-since]")) setText(el, ageText(el.dataset.since));
    $("clock").textContent = clockText(new Date(serverNow() * 1000));
  }

  // Text that did not change is not written: every write makes the browser lay the page out
  // again, and the alert banner and the ages are written on every update and every second.
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // ---- actions ---------------------------------------------------------------------

  function openDialog(action, alarm) {
    state.dialog = {action, alarm};
    $("dlg-title").textContent = t("dlg_" + action);
    $("dlg-alarm").textContent = `${t("level", {n: alarm.severity})} · ${alarm.message} · ${alarmPlace(alarm)}`;
    $("dlg-note").value = "";
    $("dlg-note").required = action === "shelve";
    $("dlg-note-label").textContent = t(action === "shelve" ? "dlg_note_required" : "dlg_note_optional");
    $("dlg-minutes-row").hidden = action !== "shelve";
    $("dlg-note").closest("label").hidden = action === "unshelve";
    $("dlg-minutes").replaceChildren(...(state.me.shelve_minutes || [60]).map((m) =>
      h("option", {value: String(m), text: m >= 60 && m % 60 === 0 ? t("hours", {n: m / 60}) : t("minutes", {n: m})})));
    $("dlg-error").hidden = true;
    $("dlg-confirm").disabled = false;
    $("action-dialog").showModal();
    $("dlg-note").focus();
  }

  async function confirmDialog(event) {
    event.preventDefault();
    const {action, alarm} = state.dialog || {};
    if (!action) return;
    const note = $("dlg-note").value.trim();
    if (action === "shelve" && !note) {
      $("dlg-note").reportValidity();
      return;
    }
    const body = {note: note || null};
    if (action === "shelve") body.minutes = Number($("dlg-minutes").value);
    $("dlg-confirm").disabled = true;
    if (hub()) window.cgHub.commandState("sent");   // waits for the gateway's confirmation
    try {
      const result = await api(`/console/api/alarms/${encodeURIComponent(alarm.id)}/${action}`,
        {method: "POST", body: JSON.stringify(body)});
      if (hub()) window.cgHub.commandState("confirmed");
      if (result.alarm && result.alarm.state !== "closed") state.alarms.set(result.alarm.id, result.alarm);
      else if (result.alarm) state.alarms.delete(result.alarm.id);
      if (result.alarm) state.changed.add(result.alarm.id);
      if (result.alarm) noteAlerting(result.alarm, result.alarm.state === "closed");
      if (result.alarm && result.alarm.state === "closed") state.membership += 1;
      $("action-dialog").close();
      toast(t("done_" + action));
      render("alarms");
    } catch (err) {
      if (hub()) window.cgHub.commandState(err.state || "failed", err.message);
      $("dlg-error").textContent = t("failed", {error: err.message});
      $("dlg-error").hidden = false;
      $("dlg-confirm").disabled = false;
    }
  }

  let toastTimer = null;
  function toast(text) {
    const el = $("toast");
    el.textContent = text;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 3000);
  }

  // ---- history ---------------------------------------------------------------------

  function fillHistoryForm() {
    const form = $("history-form");
    const keep = (select, options) => {
      const current = select.value;
      select.replaceChildren(h("option", {value: "", text: t("hist_any")}),
        ...options.map(([value, label]) => h("option", {value, text: label})));
      select.value = options.some(([v]) => v === current) ? current : "";
    };
    const buildings = [...new Set(state.devices.map((d) => d.location && d.location.building).filter(Boolean))].sort();
    keep(form.elements.building, buildings.map((b) => [b, t("loc_building", {v: b})]));
    keep(form.elements.device, state.devices.map((d) => [d.id, d.id]));
    keep(form.elements.severity, [0, 1, 2, 3, 4].map((n) => [String(n), `${t("level", {n})} ${t("level_" + n)}`]));
    keep(form.elements.event, ["raised", "repeated", "condition_cleared", "cleared", "acked", "reset",
      "shelved", "unshelved", "escalated", "closed"].map((e) => [e, t("ev_" + e)]));
  }

  async function loadHistory() {
    const form = $("history-form");
    const query = new URLSearchParams();
    for (const name of ["building", "device", "severity", "event", "q"]) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    try {
      const body = await api("/console/api/history?" + query.toString());
      $("history-rows").replaceChildren(...body.entries.map((e) => h("tr", {class: `sev-${e.alarm.severity}`},
        h("td", {text: dateTimeText(e.ts)}),
        h("td", {text: t("ev_" + e.event)}),
        h("td", {text: t("level", {n: e.alarm.severity})}),
        h("td", {text: e.alarm.message}),
        h("td", {text: alarmPlace(e.alarm)}),
        h("td", {text: e.by || ""}),
        h("td", {text: e.note || ""}))));
      $("history-empty").hidden = body.entries.length > 0;
    } catch (err) {
      toast(t("failed", {error: err.message}));
    }
  }

  // ---- page ------------------------------------------------------------------------

  function showTab(tab) {
    state.tab = tab;
    for (const button of document.querySelectorAll("[data-tab]")) {
      button.setAttribute("aria-selected", String(button.dataset.tab === tab));
    }
    for (const name of ["alarms", "devices", "history"]) $("tab-" + name).hidden = name !== tab;
    if (tab === "history") { fillHistoryForm(); loadHistory(); }
    render();
  }

  function applyLanguage() {
    document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    $("lang").textContent = t("lang_switch");
    $("alarm-list").setAttribute("aria-label", t("tab_alarms"));
    if (state.me) {
      const site = state.me.site;
      $("site-name").textContent = site.title || site.name || site.id;
      const list = (site.buildings || []).join(state.lang === "zh" ? "、" : " · ");
      $("site-buildings").textContent = list ? t("site_buildings", {list}) : "";
      $("who").textContent = `${state.me.user} (${t("role_" + state.me.role)})`;
    }
    renderLive();
    if (state.tab === "history") fillHistoryForm();
    render();
  }

  async function start() {
    state.me = await api("/console/api/me");
    state.lang = window.cgLanguage(state.me.site.language);
    document.body.classList.toggle("read-only", !["operator", "admin"].includes(state.me.role));
    if (hub()) window.cgHub.init({state, render, h, t, api, showTab});
    applyLanguage();
    $("lang").addEventListener("click", () => {
      state.lang = state.lang === "zh" ? "en" : "zh";
      localStorage.setItem("cg-lang", state.lang);
      applyLanguage();
    });
    $("logout").addEventListener("click", async () => {
      try { await api("/console/api/logout", {method: "POST", body: "{}"}); } catch (err) { /* going anyway */ }
      window.location.replace("/console/login");
    });
    for (const button of document.querySelectorAll("[data-tab]")) {
      button.addEventListener("click", () => showTab(button.dataset.tab));
    }
    $("history-form").addEventListener("submit", (e) => { e.preventDefault(); loadHistory(); });
    $("action-form").addEventListener("submit", confirmDialog);
    $("dlg-cancel").addEventListener("click", () => $("action-dialog").close());
    // The dialog was about the current row: the focus goes back to it (to its new element
    // when the action rebuilt it), not to the page's top.
    $("action-dialog").addEventListener("close", () => {
      const active = document.activeElement;
      if (state.alarmWindow && (!active || active === document.body)) state.alarmWindow.focusCurrent();
    });
    $("dev-close").addEventListener("click", () => $("device-dialog").close());
    $("device-dialog").addEventListener("close", () => clearInterval(chartTimer));
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, unlockSound);
    setInterval(tickAges, 1000);
    setInterval(() => {   // watchdog: a link can die without an error event
      if (state.live && Date.now() - state.lastMessage > WATCHDOG_MS) lost();
    }, 5000);
    connect();
  }

  start().catch((err) => {
    // Gateway unreachable while the page loads: keep trying.
    setLive(false);
    state.lostAt = state.lostAt || new Date();
    renderLive();
    setTimeout(() => window.location.reload(), RETRY_MAX_MS);
  });
})();
