// A windowed list: of thousands of rows (a hub's open alarms), only those on the screen
// and a margin above and below are in the DOM. Two spacers stand for the rest, so the
// list keeps its full height and the scrollbar means what it shows. With every row in
// the DOM, each live update cost Chromium a restyle and layout of all of them (over
// 300 ms with 5,000 alarms); now it costs the same with 5 or 5,000.
//
// Rows may differ in height (a phone's cards wrap): each row's height is measured once
// it is drawn (a ResizeObserver, which reports after the browser's own layout, so
// measuring never forces one; a row skipped by content-visibility: auto is not drawn
// yet) and remembered by key; rows never measured count as the mean of those that were. Each draw reads first (the list's place, the screen's
// height), then writes (spacers, rows), and reads nothing after its writes but in one
// case: a list scrolled to its very end is kept at its end (the last row in view).
//
// For keyboards and screen readers: the list is a table with aria-rowcount (every row,
// not only those in the DOM) and each row has its aria-rowindex; the arrow keys, Page
// Up/Down and Home/End move between rows (scrolling the ones not in the DOM in). The
// current row (the one clicked or focused last) stays current, and keeps the focus,
// when its row is rebuilt by an update, and gets the focus back when it is scrolled out
// of the DOM and back.
"use strict";
(function () {
  const MARGIN_SCREENS = 0.75;   // rows kept above and below the screen, in screen heights
  const MAX_ROWS = 150;          // however small the rows or tall the screen
  const FIRST_GUESS_PX = 84;     // a desktop row and its gap, until one is measured

  function cgWindowedList(list, {key, rowFor, removed}) {
    const top = spacer(), bottom = spacer();
    list.append(top, bottom);
    list.setAttribute("role", "table");
    list.setAttribute("aria-rowcount", "0");

    let items = [];            // every row's item, in order
    let shown = new Map();     // key -> element, the rows in the DOM
    const heights = new Map(); // key -> measured height with its gap (px)
    let measuredSum = 0;
    let gap = null;            // px under each row (its margin), read once per layout width
    let width = 0;
    let current = null;        // key of the current row
    let focusWanted = null;    // {key, action}: focus to put back on that row when it is drawn
    let queued = false;

    const resized = new ResizeObserver((entries) => {
      let changed = false;
      for (const entry of entries) {
        const el = entry.target;
        if (!el.isConnected || el.dataset.windowKey === undefined) continue;
        // A row the browser skips (content-visibility: auto, off the screen) has its
        // placeholder's height, not its own: measured once it is drawn.
        const inside = el.firstElementChild;
        if (inside && inside.checkVisibility && !inside.checkVisibility({contentVisibilityAuto: true})) continue;
        const size = entry.borderBoxSize && entry.borderBoxSize[0];
        const height = size ? size.blockSize : el.getBoundingClientRect().height;
        // after the browser's layout: reading the style here forces nothing
        if (gap === null) gap = parseFloat(getComputedStyle(el).marginBottom) || 0;
        if (height > 0 && remember(el.dataset.windowKey, height + gap)) changed = true;
      }
      if (changed) schedule();   // spacers from the real heights, next frame
    });

    function spacer() {
      const el = document.createElement("div");
      el.className = "window-spacer";
      el.setAttribute("aria-hidden", "true");
      return el;
    }

    function remember(k, pitch) {
      const old = heights.get(k);
      if (old !== undefined && Math.abs(old - pitch) < 0.5) return false;
      measuredSum += pitch - (old || 0);
      heights.set(k, pitch);
      return true;
    }

    function guess() {
      return heights.size ? measuredSum / heights.size : FIRST_GUESS_PX;
    }

    // Scrolled, resized or a row measured: redrawn in the next frame (not at all while the
    // list is on a hidden tab; showing the tab draws it).
    function schedule() {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { if (queued && list.getClientRects().length) draw(); else queued = false; });
    }

    // New items (an update, a filter, a sort): drawn now (the caller is in a frame).
    function show(next) {
      items = next;
      if (heights.size > 2 * items.length + 200) forgetGone();
      draw();
    }

    function forgetGone() {
      const keep = new Set(items.map(key));
      for (const k of [...heights.keys()]) {
        if (!keep.has(k)) { measuredSum -= heights.get(k); heights.delete(k); }
      }
    }

    function draw() {
      queued = false;
      // ---- read ----
      const onPage = list.getClientRects().length > 0;   // not on a hidden tab
      const box = onPage ? list.getBoundingClientRect() : null;
      const screen = window.innerHeight;
      const scroller = document.scrollingElement;
      const atEnd = onPage && scroller.scrollTop > 0
        && scroller.scrollTop + screen >= scroller.scrollHeight - 2;
      const firstRow = shown.size ? shown.values().next().value : null;
      if (onPage && (gap === null || box.width !== width) && firstRow) {
        if (box.width !== width && width) {   // rows wrap differently: measure them again
          heights.clear();
          measuredSum = 0;
          for (const el of shown.values()) { resized.unobserve(el); resized.observe(el); }
        }
        gap = parseFloat(getComputedStyle(firstRow).marginBottom) || 0;
        width = box.width;
      }
      const viewTop = onPage ? -box.top : 0;
      const margin = screen * MARGIN_SCREENS;
      const from = viewTop - margin, to = viewTop + screen + margin;
      const each = guess();
      let offset = 0, first = -1, last = -1, above = 0, total = 0;
      for (let i = 0; i < items.length; i++) {
        const h = heights.get(key(items[i]));
        const pitch = h === undefined ? each : h;
        if (first < 0 && offset + pitch > from) { first = i; above = offset; }
        if (first >= 0 && offset < to && i - first < MAX_ROWS) last = i;
        offset += pitch;
      }
      total = offset;
      if (first < 0 && items.length) {   // scrolled past the end (the list got shorter)
        first = Math.max(0, items.length - Math.ceil(screen / each));
        last = items.length - 1;
        above = 0;
        for (let i = 0; i < first; i++) above += heights.get(key(items[i])) ?? each;
      }
      let below = total - above;
      const active = document.activeElement;
      const focused = active && active !== list && list.contains(active) ? active : null;
      if (focused) {
        const row = focused.closest("[data-window-key]");
        if (row) focusWanted = {key: row.dataset.windowKey, action: focused.dataset.action || null};
      }

      // ---- write ----
      const wanted = [];
      const next = new Map();
      for (let i = first; i >= 0 && i <= last; i++) {
        const item = items[i];
        const k = key(item);
        const el = rowFor(item);
        below -= heights.get(k) ?? each;
        if (el.dataset.windowKey !== k) {
          el.dataset.windowKey = k;
          el.setAttribute("role", "row");
        }
        setAttr(el, "aria-rowindex", String(i + 1));
        setAttr(el, "tabindex", k === current ? "0" : "-1");
        setAttr(el, "aria-current", k === current ? "true" : null);
        next.set(k, el);
        wanted.push(el);
      }
      setAttr(list, "aria-rowcount", String(items.length));
      setHeight(top, above);
      setHeight(bottom, Math.max(0, below));
      for (const [k, el] of shown) {
        if (next.get(k) !== el) { resized.unobserve(el); removed(el); }
      }
      for (const [k, el] of next) if (shown.get(k) !== el) resized.observe(el);
      shown = next;
      place([top, ...wanted, bottom]);
      restoreFocus();
      if (atEnd && scroller.scrollTop + screen < scroller.scrollHeight - 2) {
        scroller.scrollTop = scroller.scrollHeight;   // at the end, the end stays in view
      }
    }

    function setAttr(el, name, value) {
      if (value === null) {
        if (el.hasAttribute(name)) el.removeAttribute(name);
      } else if (el.getAttribute(name) !== value) {
        el.setAttribute(name, value);
      }
    }

    function setHeight(el, px) {
      const value = Math.round(px) + "px";
      if (el.style.height !== value) el.style.height = value;
    }

    // The rows in this order, touching only what changed: an unchanged row stays the same
    // element (a click on it is never lost).
    function place(wantedEls) {
      const keep = new Set(wantedEls);
      for (const el of [...list.children]) if (!keep.has(el)) el.remove();
      let cursor = list.firstElementChild;
      for (const el of wantedEls) {
        if (cursor === el) {
          cursor = cursor.nextElementSibling;
        } else if (cursor && cursor.nextElementSibling === el) {
          // the row at the cursor goes further down: take it out, it is put back at its place
          const down = cursor;
          cursor = el.nextElementSibling;
          down.remove();
        } else {
          list.insertBefore(el, cursor);
        }
      }
    }

    // A row rebuilt by an update (or scrolled out and back in) takes the focus back, unless
    // the user has put it somewhere else meanwhile.
    function restoreFocus() {
      if (!focusWanted) return;
      const active = document.activeElement;
      if (active && active !== document.body && !(list.contains(active) && active.isConnected)) {
        focusWanted = null;
        return;
      }
      if (active && list.contains(active)) return;   // still on its element
      const el = shown.get(focusWanted.key);
      if (!el) return;   // not in the DOM now: kept until it is
      const target = (focusWanted.action && el.querySelector(`[data-action="${focusWanted.action}"]`)) || el;
      target.focus({preventScroll: true});
    }

    function indexOf(k) {
      for (let i = 0; i < items.length; i++) if (key(items[i]) === k) return i;
      return -1;
    }

    function setCurrent(k) {
      if (current === k) return;
      const old = current !== null ? shown.get(current) : null;
      current = k;
      if (old) { setAttr(old, "aria-current", null); setAttr(old, "tabindex", "-1"); }
      const el = shown.get(k);
      if (el) { setAttr(el, "aria-current", "true"); setAttr(el, "tabindex", "0"); }
    }

    // Move to the row at index i: scroll it in (drawn at once if it was not in the DOM)
    // and focus it.
    function focusIndex(i) {
      if (!items.length) return;
      i = Math.max(0, Math.min(items.length - 1, i));
      const k = key(items[i]);
      setCurrent(k);
      focusWanted = {key: k, action: null};
      let el = shown.get(k);
      if (!el) {
        let offset = 0;
        const each = guess();
        for (let j = 0; j < i; j++) offset += heights.get(key(items[j])) ?? each;
        const listTop = list.getBoundingClientRect().top + window.scrollY;
        window.scrollTo(0, listTop + offset - window.innerHeight / 3);
        draw();
        el = shown.get(k);
      }
      if (el) {
        el.focus({preventScroll: true});
        el.scrollIntoView({block: "nearest"});
      }
    }

    list.addEventListener("keydown", (e) => {
      const row = e.target.closest && e.target.closest("[data-window-key]");
      if (!row || e.altKey || e.ctrlKey || e.metaKey) return;
      const i = indexOf(row.dataset.windowKey);
      const page = Math.max(1, Math.floor(window.innerHeight / guess()) - 1);
      const to = {ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + page, PageUp: i - page,
        Home: 0, End: items.length - 1}[e.key];
      if (to === undefined || i < 0) return;
      e.preventDefault();
      focusIndex(to);
    });
    list.addEventListener("focusin", (e) => {
      const row = e.target.closest("[data-window-key]");
      if (row) setCurrent(row.dataset.windowKey);
    });
    list.addEventListener("pointerdown", (e) => {
      const row = e.target.closest("[data-window-key]");
      if (row) setCurrent(row.dataset.windowKey);
    });
    // Focus moved elsewhere on purpose (a filter, the dialog's note, a click on the page's
    // background): not put back later. A row taken out of the DOM (rebuilt, scrolled away)
    // loses the focus too, but that is not the user's doing: it is put back.
    document.addEventListener("focusin", (e) => {
      if (!list.contains(e.target)) focusWanted = null;
    });
    list.addEventListener("focusout", (e) => {
      const from = e.target;
      queueMicrotask(() => {
        if (from.isConnected && !list.contains(document.activeElement)) focusWanted = null;
      });
    });
    window.addEventListener("scroll", schedule, {passive: true});
    window.addEventListener("resize", schedule, {passive: true});

    return {
      show,
      redraw: schedule,
      current: () => current,
      // back to the current row (a dialog about it closed): focus it if it is drawn
      focusCurrent() {
        if (current === null) return;
        const i = indexOf(current);
        if (i >= 0) focusIndex(i);
      },
      rows: () => [...shown.values()],
    };
  }

  window.cgWindowedList = cgWindowedList;
})();
