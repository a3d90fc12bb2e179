/* clinrisk model monitoring page (issue 13): live validation and drift of one model version.
 *
 * Reads GET /v1/models, /v1/models/{name}/versions/{v}/monitoring (overall, per week for the
 * AUROC chart) and /drift with the user's own key (admin scope). The key shares the clinician
 * page's sessionStorage entry (this tab only). Everything is drawn with DOM and SVG nodes and
 * textContent: no HTML is built from server text, and no inline styles (the CSP forbids them).
 */
(function () {
  "use strict";

  const KEY_STORAGE = "clinrisk.apiKey";
  const WEEKS = 8;
  const SVG = "http://www.w3.org/2000/svg";
  const state = { key: null, models: [], serial: 0 };
  const $ = (id) => document.getElementById(id);

  // --- helpers ---------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fixed = (value, digits) =>
    value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  const percent = (value, digits = 1) =>
    value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`;
  const withCi = (estimate, digits = 3) =>
    estimate
      ? `${fixed(estimate.value, digits)} (${fixed(estimate.ci_low, digits)}–${fixed(estimate.ci_high, digits)})`
      : "–";

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
    }
  }

  async function api(path) {
    const response = await fetch(path, {
      headers: { Accept: "application/json", Authorization: `Bearer ${state.key}` },
      cache: "no-store",
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  function showProblem(message) {
    const box = $("problem");
    box.textContent = message;
    box.hidden = !message;
  }

  // --- key -------------------------------------------------------------------------------------

  async function connect(key) {
    state.key = key;
    $("key-status").textContent = "Connecting…";
    try {
      state.models = (await api("/v1/models")).filter((m) => m.kind !== "equation");
    } catch (error) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORAGE);
      $("key-status").textContent =
        error.status === 401 ? "This key is not valid." : "The service could not be reached.";
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-status").textContent = "Connected";
    $("api-key").value = "";
    $("key-forget").hidden = false;
    $("connect-view").hidden = true;
    $("picker").hidden = false;
    const select = $("model-select");
    select.replaceChildren(...state.models.map((m) => el("option", { value: m.name }, m.title)));
    fillVersions();
    await load();
  }

  function forget() {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    window.location.reload();
  }

  function fillVersions() {
    const model = state.models.find((m) => m.name === $("model-select").value);
    const versions = model ? [...model.versions].reverse() : [];
    $("version-select").replaceChildren(
      ...versions.map((v) =>
        el("option", { value: v }, v === model.default_version ? `${v} (default)` : v),
      ),
    );
  }

  // --- loading -----------------------------------------------------------------------------------

  function weekWindows(now) {
    const day = 86400000;
    const end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) + day;
    return Array.from({ length: WEEKS }, (_, i) => {
      const until = new Date(end - i * 7 * day);
      const since = new Date(end - (i + 1) * 7 * day);
      return { since: since.toISOString(), until: until.toISOString() };
    }).reverse();
  }

  async function load() {
    const name = $("model-select").value;
    const version = $("version-select").value;
    if (!name || !version) return;
    const serial = ++state.serial;
    const base = `/v1/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`;
    showProblem("");
    $("overview").setAttribute("aria-busy", "true");
    try {
      const windows = weekWindows(new Date());
      const [live, drift, governance, ...weeks] = await Promise.all([
        api(`${base}/monitoring`),
        api(`${base}/drift`),
        api(`/v1/models/${encodeURIComponent(name)}/lifecycle`),
        ...windows.map((w) =>
          api(`${base}/monitoring?since=${encodeURIComponent(w.since)}&until=${encodeURIComponent(w.until)}`),
        ),
      ]);
      if (serial !== state.serial) return; // a newer choice is loading
      const model = state.models.find((m) => m.name === name);
      $("overview-heading").textContent = `${model ? model.title : name} · ${version}`;
      renderAlarms(live, drift);
      renderCalibration(live);
      renderAuroc(weeks.map((w, i) => ({ window: windows[i], report: w })), live);
      renderSubgroups(live);
      renderDrift(drift);
      renderLifecycle(governance, version);
      $("overview").hidden = false;
      $("overview").setAttribute("data-model", `${name}@${version}`); // what is on screen
    } catch (error) {
      if (serial !== state.serial) return;
      $("overview").hidden = true;
      showProblem(
        error.status === 403
          ? "This key cannot read monitoring figures: it needs the admin scope."
          : `The monitoring figures could not be loaded: ${error.message}`,
      );
    } finally {
      $("overview").removeAttribute("aria-busy");
    }
  }

  // --- alarms ------------------------------------------------------------------------------------

  const CHECK_NAMES = {
    risk: "the spread of predicted risks",
    tiers: "the share of patients in each tier",
    expected_auroc: "the AUROC expected on today's case mix",
  };

  const METRIC_NAMES = {
    auroc: "AUROC",
    calibration_slope: "calibration slope",
    calibration_intercept: "calibration intercept",
    observed_expected: "observed/expected ratio",
  };
  // "high.ppv" -> "PPV at high"; unknown names as they are.
  const metricWords = (names) => names.map((m) => {
    const [tier, figure] = m.includes(".") ? m.split(".") : [null, m];
    const words = METRIC_NAMES[figure] || { ppv: "PPV", sensitivity: "sensitivity" }[figure] || figure;
    return tier ? `${words} at ${tier}` : words;
  }).join(", ");

  function renderAlarms(live, drift) {
    const items = [];
    const worse = live.overall.worse_than_validation || [];
    if (worse.length) {
      items.push(
        el("li", { class: "alarm critical", "data-alarm": "worse", "data-group": "all" },
          el("strong", {}, "Worse than validation: "),
          `${metricWords(worse)} (95% interval excludes the validation value).`),
      );
    }
    for (const group of live.subgroups) {
      if (!group.suppressed && group.worse_than_validation.length) {
        items.push(
          el("li", { class: "alarm critical", "data-alarm": "worse", "data-group": group.key },
            el("strong", {}, `Worse than validation in ${group.factor} ${group.level}: `),
            `${metricWords(group.worse_than_validation)}.`),
        );
      }
    }
    const labels = Object.fromEntries(drift.features.map((f) => [f.feature, f.label || f.feature]));
    for (const check of drift.breaches) {
      const feature = check.startsWith("feature:") ? check.slice("feature:".length) : null;
      const what = feature ? `the input ${labels[feature] || feature}` : CHECK_NAMES[check] || check;
      items.push(
        el("li", { class: "alarm warning", "data-alarm": "drift" },
          el("strong", {}, "Drift: "),
          `${what} differs from ${check === "tiers" || check === "risk" || check === "expected_auroc" ? "validation" : "training"} beyond the alert threshold.`),
      );
    }
    const box = $("alarms");
    box.replaceChildren(
      items.length
        ? el("ul", { class: "alarm-list" }, ...items)
        : el("p", { class: "all-clear" },
          "No alarm: live figures consistent with validation and no drift past the thresholds."),
    );
  }

  // --- charts ------------------------------------------------------------------------------------

  function chartFrame(width, height, pad) {
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      class: "chart-svg",
    });
    root.append(
      svg("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, class: "axis" }),
      svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, class: "axis" }),
    );
    return root;
  }

  function renderCalibration(live) {
    const chart = $("calibration-chart");
    const empty = $("calibration-empty");
    const curve = live.overall.calibration_curve;
    if (!curve) {
      chart.replaceChildren();
      empty.hidden = false;
      empty.textContent = live.overall.suppressed
        ? `Not shown: ${live.overall.reason} (${live.overall.outcomes_known} so far).`
        : "Not shown: the model's manifest has no validation calibration bins.";
      return;
    }
    empty.hidden = true;
    const W = 420, H = 320, pad = { l: 48, r: 12, t: 12, b: 40 };
    const values = curve.flatMap((c) => [
      c.validation.mean_predicted, c.validation.ci_high || 0,
      c.live.mean_predicted || 0, c.live.ci_high || 0,
    ]);
    const top = Math.min(1, Math.max(0.05, ...values) * 1.05);
    const x = (v) => pad.l + (v / top) * (W - pad.l - pad.r);
    const y = (v) => H - pad.b - (v / top) * (H - pad.t - pad.b);
    const root = chartFrame(W, H, pad);
    root.setAttribute("aria-label", "Calibration curve: observed against predicted risk, live and validation");
    root.append(svg("line", { x1: x(0), y1: y(0), x2: x(top), y2: y(top), class: "diagonal" }));
    for (const tick of [0, top / 2, top]) {
      root.append(
        svg("text", { x: x(tick), y: H - pad.b + 16, class: "tick", "text-anchor": "middle" }, percent(tick, 0)),
        svg("text", { x: pad.l - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" }, percent(tick, 0)),
      );
    }
    root.append(
      svg("text", { x: (W + pad.l) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle" }, "Predicted risk"),
    );
    const series = [
      ["validation", "point validation", (c) => c.validation],
      ["live", "point live", (c) => c.live],
    ];
    for (const [name, cls, pick] of series) {
      const points = curve.map(pick).filter((p) => p.n > 0 && p.observed_rate !== null);
      if (points.length > 1) {
        root.append(svg("polyline", {
          points: points.map((p) => `${x(p.mean_predicted)},${y(p.observed_rate)}`).join(" "),
          class: `line ${name}`,
        }));
      }
      for (const p of points) {
        if (p.ci_low !== null && p.ci_high !== null) {
          root.append(svg("line", {
            x1: x(p.mean_predicted), x2: x(p.mean_predicted), y1: y(p.ci_low), y2: y(p.ci_high), class: `ci ${name}`,
          }));
        }
        const dot = svg("circle", { cx: x(p.mean_predicted), cy: y(p.observed_rate), r: 4, class: cls, "data-series": name });
        dot.append(svg("title", {}, `${name}: predicted ${percent(p.mean_predicted)}, observed ${percent(p.observed_rate)} (n ${p.n})`));
        root.append(dot);
      }
    }
    chart.replaceChildren(root, legend([["live", "Live (recorded outcomes)"], ["validation", "Validation (test split)"]]));
  }

  function legend(entries) {
    return el("ul", { class: "legend" }, ...entries.map(([cls, text]) =>
      el("li", { class: `legend-${cls}` }, text)));
  }

  function renderAuroc(weeks, live) {
    const chart = $("auroc-chart");
    const empty = $("auroc-empty");
    const reference = live.overall.validation ? live.overall.validation.auroc.validation : null;
    const points = weeks
      .map((w, i) => ({ i, week: w.window, group: w.report.overall }))
      .filter((p) => !p.group.suppressed && p.group.live.auroc);
    empty.hidden = points.length > 0;
    empty.textContent = points.length ? "" :
      `No week has ${live.minimum_group_size} or more predictions with a known outcome yet.`;
    const W = 420, H = 260, pad = { l: 48, r: 12, t: 12, b: 40 };
    const lo = 0.5, hi = 1.0;
    const x = (i) => pad.l + ((i + 0.5) / weeks.length) * (W - pad.l - pad.r);
    const y = (v) => H - pad.b - ((Math.max(lo, Math.min(hi, v)) - lo) / (hi - lo)) * (H - pad.t - pad.b);
    const root = chartFrame(W, H, pad);
    root.setAttribute("aria-label", "AUROC per week with 95% intervals and the validation AUROC");
    for (const tick of [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]) {
      root.append(svg("text", { x: pad.l - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" }, tick.toFixed(1)));
    }
    weeks.forEach((w, i) => {
      if (i % 2 === weeks.length % 2) return;
      root.append(svg("text", { x: x(i), y: H - pad.b + 16, class: "tick", "text-anchor": "middle" },
        w.window.since.slice(5, 10)));
    });
    root.append(svg("text", { x: (W + pad.l) / 2, y: H - 6, class: "axis-label", "text-anchor": "middle" }, "Week starting (UTC)"));
    if (reference !== null) {
      root.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y(reference), y2: y(reference), class: "reference" }));
    }
    for (const p of points) {
      const auc = p.group.live.auroc;
      root.append(svg("line", { x1: x(p.i), x2: x(p.i), y1: y(auc.ci_low), y2: y(auc.ci_high), class: "ci live" }));
      const dot = svg("circle", { cx: x(p.i), cy: y(auc.value), r: 4, class: "point live", "data-series": "auroc" });
      dot.append(svg("title", {}, `Week of ${p.week.since.slice(0, 10)}: AUROC ${withCi(auc)}, ${p.group.outcomes_known} outcomes`));
      root.append(dot);
    }
    chart.replaceChildren(root);
  }

  // --- tables ------------------------------------------------------------------------------------

  const JUDGEMENT_CLASS = {
    "worse than validation": "bad",
    "better than validation": "good",
    "consistent with validation": "ok",
  };

  function judgementCell(group) {
    if (group.suppressed) return el("td", { class: "muted" }, `Suppressed: ${group.reason}`);
    const worse = group.worse_than_validation;
    return worse.length
      ? el("td", { class: "bad" }, `Worse than validation: ${metricWords(worse)}`)
      : el("td", { class: "ok" }, "Consistent with validation");
  }

  function groupRow(label, group) {
    const live = group.suppressed ? null : group.live;
    const validation = group.suppressed ? null : group.validation;
    const auroc = validation && validation.auroc;
    return el("tr", { "data-group": label },
      el("th", { scope: "row" }, label),
      el("td", { class: "num" }, String(group.predictions)),
      el("td", { class: "num" }, String(group.outcomes_known)),
      el("td", { class: `num ${auroc ? JUDGEMENT_CLASS[auroc.judgement] || "" : ""}` }, live ? withCi(live.auroc) : "–"),
      el("td", { class: "num" }, auroc ? fixed(auroc.validation, 3) : "–"),
      el("td", { class: "num" }, live ? withCi(live.observed_expected, 2) : "–"),
      el("td", { class: "num" }, live ? withCi(live.calibration_slope, 2) : "–"),
      judgementCell(group),
    );
  }

  function renderSubgroups(live) {
    $("live-note").textContent =
      `All recorded outcomes. Groups with fewer than ${live.minimum_group_size} known outcomes are ` +
      "suppressed (counts only). A figure is judged worse than validation when its 95% interval " +
      "excludes the validation value on the worse side.";
    const rows = [groupRow("All patients", live.overall)];
    for (const group of live.subgroups) rows.push(groupRow(`${group.factor}: ${group.level}`, group));
    $("subgroup-table").tBodies[0].replaceChildren(...rows);
  }

  const STATUS_TEXT = {
    alert: "Alert",
    warning: "Warning",
    stable: "Stable",
    "too few rows": "Too few rows to judge",
    "no reference": "No training reference",
  };

  function statusCell(status) {
    return el("td", { class: `status status-${status.replace(/ /g, "-")}` }, STATUS_TEXT[status] || status);
  }

  function renderDrift(drift) {
    const t = drift.thresholds;
    $("drift-note").textContent =
      `Scored patients from ${drift.window.first_day} to ${drift.window.last_day} (UTC), ` +
      `${drift.scored} in all. Population stability index (PSI): warning from ${t.psi_warning}, ` +
      `alert from ${t.psi_alert}; no judgement under ${t.min_rows} rows. PSI measures a change ` +
      "in who is being scored, not whether the model is wrong for them.";
    const e = drift.expected_performance;
    const facts = [
      ["Expected AUROC on today's case mix", fixed(e.expected_auroc, 3)],
      ["Validation AUROC", fixed(e.validation_auroc, 3)],
      ["Expected event rate (mean predicted risk)", percent(e.expected_event_rate)],
      ["Event rate at validation", percent(e.validation_event_rate)],
    ];
    for (const tier of e.tiers) {
      facts.push([`Expected PPV at ${tier.tier} (≥ ${percent(tier.threshold)})`,
        `${percent(tier.expected_ppv)} (validation ${percent(tier.validation_ppv)})`]);
    }
    $("expected").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
    $("tier-table").tBodies[0].replaceChildren(...drift.tiers.shares.map((tier) =>
      el("tr", { "data-tier": tier.tier },
        el("th", { scope: "row" }, tier.tier),
        el("td", { class: "num" }, percent(tier.share)),
        el("td", { class: "num" }, percent(tier.validation_share)),
        el("td", { class: "num" }, fixed(tier.per_day, 1)),
        el("td", { class: "num" }, fixed(tier.per_day_at_validation_share, 1)),
      )));
    const rows = [];
    const risk = drift.predicted_risk;
    rows.push(el("tr", { "data-feature": "@risk", class: risk.status === "alert" ? "breach" : null },
      el("th", { scope: "row" }, "Predicted risk (validation deciles)"),
      el("td", { class: "num" }, String(drift.scored)),
      el("td", { class: "num" }, fixed(risk.psi, 3)),
      statusCell(risk.status),
      el("td", {}, "–")));
    rows.push(el("tr", { "data-feature": "@tier", class: drift.tiers.status === "alert" ? "breach" : null },
      el("th", { scope: "row" }, "Tier shares"),
      el("td", { class: "num" }, String(drift.tiers.shares.reduce((s, t) => s + (t.per_day || 0), 0) > 0 ? drift.scored : 0)),
      el("td", { class: "num" }, fixed(drift.tiers.psi, 3)),
      statusCell(drift.tiers.status),
      el("td", {}, "–")));
    const features = [...drift.features].sort((a, b) => (b.psi || 0) - (a.psi || 0));
    for (const f of features) {
      const shift = f.largest_shift;
      rows.push(el("tr", { "data-feature": f.feature, class: f.status === "alert" ? "breach" : null },
        el("th", { scope: "row" }, f.label || f.feature),
        el("td", { class: "num" }, String(f.n)),
        el("td", { class: "num" }, fixed(f.psi, 3)),
        statusCell(f.status),
        el("td", {}, shift ? `${shift.bin}: ${percent(shift.expected)} → ${percent(shift.observed)}` : "–")));
    }
    $("drift-table").tBodies[0].replaceChildren(...rows);
  }

  function renderLifecycle(governance, version) {
    const mine = governance.versions.find((v) => v.version === version);
    const state = mine ? mine.state : "unknown";
    const parts = [`This version is ${state}`];
    if (mine && mine.since) parts.push(` since ${mine.since.slice(0, 10)}, by ${mine.by}`);
    parts.push(". ");
    parts.push(governance.approved
      ? `Approved version: ${governance.approved}. `
      : "No version of this model has been approved yet. ");
    parts.push(`Served by default: ${governance.served_default}.`);
    const note = $("lifecycle-note");
    note.textContent = parts.join("");
    note.setAttribute("data-state", state);
    const rows = [...governance.history].reverse().map((e) =>
      el("tr", { "data-version": e.model_version },
        el("td", { class: "num" }, e.changed_at.slice(0, 16).replace("T", " ")),
        el("td", {}, e.model_version),
        el("td", {}, `${e.from_state} → ${e.to_state}`),
        el("td", {}, e.changed_by),
        el("td", {}, e.reason)));
    $("lifecycle-table").tBodies[0].replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5", class: "muted" },
        "No decision recorded: every version is a candidate."))]),
    );
  }

  // --- start -------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("key-connect").addEventListener("click", () => {
      const key = $("api-key").value.trim();
      if (key) connect(key);
    });
    $("api-key").addEventListener("keydown", (event) => {
      if (event.key === "Enter") $("key-connect").click();
    });
    $("key-forget").addEventListener("click", forget);
    $("model-select").addEventListener("change", () => { fillVersions(); load(); });
    $("version-select").addEventListener("change", load);
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) connect(saved);
  });
})();
