// The console's glue between server-rendered markup and its libraries:
// @json-editor/json-editor builds each command's form from the JSON Schema
// in data-schema, uPlot draws a transaction's chart from data-chart. No
// rendering of our own; no inline script (the CSP allows none).
(function () {
  "use strict";

  const editors = new WeakMap();

  // root and what it holds matching selector: htmx hands over the swapped
  // element itself, which may be the one wanted.
  function within(root, selector) {
    const found = Array.from(root.querySelectorAll(selector));
    return root.matches && root.matches(selector) ? [root].concat(found) : found;
  }

  function initEditors(root) {
    within(root, "form[data-schema]").forEach(function (form) {
      if (editors.has(form)) return;
      const editor = new window.JSONEditor(form.querySelector("[data-editor]"), {
        schema: JSON.parse(form.dataset.schema),
        theme: "html",
        // Required fields first; optional ones added through "Properties".
        display_required_only: true,
        remove_empty_properties: true,
        no_additional_properties: true,
        disable_collapse: true,
        disable_array_delete_all_rows: true,
        disable_array_delete_last_row: true,
        prompt_before_delete: false,
        show_errors: "interaction",
      });
      editors.set(form, editor);
    });
  }

  // Sending a form with an editor: its value, validated, becomes "payload".
  document.addEventListener("htmx:configRequest", function (event) {
    const editor = editors.get(event.detail.elt);
    if (!editor) return;
    // The editor takes a field's value on "change", which Enter in a field
    // (and a click that does not move the focus) does not fire: fire it.
    // (Its value fields alone are named root[...]; not its own controls.)
    event.detail.elt.querySelectorAll('[data-editor] [name^="root"]')
      .forEach(function (field) { field.dispatchEvent(new Event("change")); });
    const value = editor.getValue();
    const errors = editor.validate(value);  // with no argument: results cached a frame ago
    if (errors.length) {
      event.preventDefault();
      editor.options.show_errors = "always";
      editor.onChange();
      const out = document.getElementById("command-result");
      if (out) {
        out.textContent = "Not sent: " + errors.map(function (e) {
          return e.path.replace(/^root\.?/, "") + " " + e.message;
        }).join("; ");
      }
      return;
    }
    event.detail.parameters.payload = JSON.stringify(value);
  });

  function initCharts(root) {
    within(root, "[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) return;
      el.dataset.drawn = "1";
      const d = JSON.parse(el.dataset.chart);
      const fmt = function (unit, digits) {
        return function (u, v) { return v == null ? "—" : v.toFixed(digits) + " " + unit; };
      };
      const size = function () {
        return { width: Math.max(el.clientWidth, 280), height: el.clientWidth < 500 ? 240 : 320 };
      };
      const plot = new window.uPlot(Object.assign(size(), {
        // The console shows every time in UTC.
        tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
        scales: { x: { time: true }, kWh: { auto: true }, kW: { auto: true } },
        series: [
          { label: "Time (UTC)" },
          { label: "Energy", scale: "kWh", stroke: "#1a7f37", width: 2, spanGaps: true,
            points: { show: true }, value: fmt("kWh", 3) },
          { label: "Power", scale: "kW", stroke: "#0550ae", width: 2, dash: [6, 4], spanGaps: true,
            points: { show: true }, value: fmt("kW", 2) },
        ],
        axes: [
          {},
          { scale: "kWh", label: "kWh" },
          { scale: "kW", label: "kW", side: 1, grid: { show: false } },
        ],
      }), [d.t, d.energy_kwh, d.power_kw], el);
      window.addEventListener("resize", function () { plot.setSize(size()); });
    });
  }

  window.htmx.onLoad(function (root) {
    initEditors(root);
    initCharts(root);
  });
})();
