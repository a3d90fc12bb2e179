/* clinrisk clinician view: vanilla JS, no framework, no network beyond this service's public API.
 *
 * Two ways in: an API key pasted by the user (stand-alone), or a SMART EHR launch (?iss&launch):
 * the page runs the browser half of the authorization code flow with PKCE (S256) and `state`;
 * this service redeems the code, reads the chart and gives the page a short-lived clinrisk
 * session token, kept in memory only (the EHR's access token never reaches the page).
 * Privacy: the API key lives in sessionStorage (this tab only); patient values live in memory and
 * go to the API in POST bodies only. Nothing else is stored, and no URL ever holds patient data
 * (the hash holds only the view and the model name).
 * Safety: all text reaches the DOM through textContent / createTextNode, never innerHTML, so a
 * model card or an error message cannot inject markup.
 */
(function () {
  "use strict";

  const KEY_STORAGE = "clinrisk.apiKey";
  // The launch's `state`, PKCE verifier and `iss`, kept across the trip to the EHR's sign-in only
  // (this tab; removed when the EHR sends the user back, used or not).
  const SMART_PENDING = "clinrisk.smartLaunch";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOP_FACTORS = 4;
  const CURVE_POINTS = 41;
  const TIER_COLOURS = {
    2: ["#d8eedb", "#f6d2cc"],
    3: ["#d8eedb", "#fbe7b5", "#f6d2cc"],
    4: ["#d8eedb", "#fbf0b8", "#fbd9a8", "#f6c9c2"],
    5: ["#d8eedb", "#eaf3c4", "#fbf0b8", "#fbd9a8", "#f6c9c2"],
  };

  // Inputs grouped as a chart groups them. A feature's own `group` (if the manifest declares one)
  // wins; otherwise this small map by feature name; anything unknown lands in "Other inputs".
  const GROUP_ORDER = [
    "Demographics",
    "Vital signs and measurements",
    "Laboratory results",
    "Medical history",
    "Medications",
    "Lifestyle and behaviours",
    "Self-reported health",
    "This admission",
    "Earlier health-care use",
    "Other inputs",
  ];
  const FEATURE_GROUPS = {
    age_years: "Demographics",
    sex_male: "Demographics",
    bmi_kg_m2: "Vital signs and measurements",
    systolic_bp_mm_hg: "Vital signs and measurements",
    diastolic_bp_mm_hg: "Vital signs and measurements",
    heart_rate_bpm: "Vital signs and measurements",
    total_cholesterol_mg_dl: "Laboratory results",
    glucose_mg_dl: "Laboratory results",
    hba1c_result: "Laboratory results",
    max_glucose_serum: "Laboratory results",
    hypertension: "Medical history",
    high_blood_pressure: "Medical history",
    high_cholesterol: "Medical history",
    cholesterol_checked_5y: "Medical history",
    diabetes: "Medical history",
    stroke_history: "Medical history",
    coronary_disease_or_mi: "Medical history",
    difficulty_walking: "Medical history",
    bp_medication: "Medications",
    insulin: "Medications",
    diabetes_medication: "Medications",
    medication_change: "Medications",
    current_smoker: "Lifestyle and behaviours",
    cigarettes_per_day: "Lifestyle and behaviours",
    smoked_100_cigarettes: "Lifestyle and behaviours",
    physically_active: "Lifestyle and behaviours",
    fruit_daily: "Lifestyle and behaviours",
    vegetables_daily: "Lifestyle and behaviours",
    heavy_alcohol_use: "Lifestyle and behaviours",
    general_health: "Self-reported health",
    poor_mental_health_days: "Self-reported health",
    poor_physical_health_days: "Self-reported health",
    time_in_hospital_days: "This admission",
    lab_procedures: "This admission",
    procedures: "This admission",
    medications: "This admission",
    diagnoses_count: "This admission",
    admission_type: "This admission",
    admission_source: "This admission",
    primary_diagnosis: "This admission",
    discharge_disposition: "This admission",
    outpatient_visits_prior_year: "Earlier health-care use",
    emergency_visits_prior_year: "Earlier health-care use",
    inpatient_admissions_prior_year: "Earlier health-care use",
    prior_encounters: "Earlier health-care use",
    prior_readmissions_30d: "Earlier health-care use",
  };
  // Labelled choices for coded binary/ordinal inputs whose manifest carries no `value_labels` yet:
  // the code sent is unchanged, only what the clinician reads and picks is a word.
  const CHOICE_LABELS = {
    sex_male: { title: "Sex", options: [["1", "Male"], ["0", "Female"]] }, // 1 first, as Yes / No
    general_health: {
      title: "Self-rated health",
      options: [["1", "Excellent"], ["2", "Very good"], ["3", "Good"], ["4", "Fair"], ["5", "Poor"]],
    },
  };

  const state = {
    key: null,
    models: [],
    details: new Map(),
    model: null, // the selected model's detail
    features: null, // the last features sent (in memory only)
    result: null, // the last prediction
    sent: null, // exactly what the shown result was calculated from (form snapshot, in memory only)
    requestSerial: 0,
    redraw: [], // chart renderers to call again when the layout width changes
    smart: null, // a SMART launch: {ehr, patient, models: {name: chart values}, expires} (memory)
    chartValues: new Map(), // feature -> the value the chart gave, as the form reads it
  };

  /* ---------------------------------------------------------------- DOM helpers */

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    applyAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    applyAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function applyAttrs(node, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.setAttribute("class", value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
  }

  function append(node, children) {
    if (children === null || children === undefined) return;
    for (const child of Array.isArray(children) ? children : [children]) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  const $ = (id) => document.getElementById(id);

  /* ---------------------------------------------------------------- formatting */

  function pct(p, digits = 1) {
    return `${(p * 100).toFixed(digits)}%`;
  }

  function pctShort(p) {
    const value = p * 100;
    if (value === 0) return "0%";
    if (value < 1) return `${Number(value.toPrecision(1))}%`;
    return `${Number(value.toFixed(1))}%`;
  }

  function num(value) {
    if (Number.isInteger(value)) return value.toLocaleString("en-GB");
    return String(Number(Number(value).toPrecision(4)));
  }

  // How a value reads per unit: the same table as the service's models/describe.py (UNITS), so
  // the page rounds as the API's explanation texts do ("168 mmHg", "43.1 kg/m²").
  const UNIT_STYLES = {
    mmHg: ["mmHg", 0],
    "mg/dL": ["mg/dL", 0],
    "mmol/L": ["mmol/L", 1],
    "kg/m2": ["kg/m²", 1],
    years: ["years", 0],
    days: ["days", 0],
    "cigarettes/day": ["cigarettes per day", 0],
    "beats/min": ["beats per minute", 0],
    count: ["", 0],
  };

  function prettyUnit(unit) {
    if (!unit) return "";
    return unit in UNIT_STYLES ? UNIT_STYLES[unit][0] : unit;
  }

  function withUnit(value, unit) {
    const style = UNIT_STYLES[unit];
    const shown = style ? Number(value).toFixed(style[1]).replace(/^-0(\.0+)?$/, "0") : num(value);
    const u = prettyUnit(unit);
    return u ? `${shown} ${u}` : shown;
  }

  function logit(p) {
    return Math.log(p / (1 - p));
  }

  // The explanation's scale: log-odds (logistic, trees) or log cumulative hazard (a Cox equation).
  function scaleOf(explanation) {
    if (explanation && explanation.scale === "log_cumulative_hazard") {
      return { toP: (z) => 1 - Math.exp(-Math.exp(z)), fromP: (p) => Math.log(-Math.log(1 - p)) };
    }
    return { toP: sigmoid, fromP: logit };
  }

  function sigmoid(x) {
    return 1 / (1 + Math.exp(-x));
  }

  // Percentage points a contribution adds to this patient's risk: the risk as calculated minus
  // the risk with that contribution taken away (the other inputs unchanged), undone on the
  // explanation's own scale (log-odds, or log cumulative hazard for a Cox equation). This is the
  // rule of the CDS cards (service/cds_hooks/points.py over models.describe.points_change), so a
  // factor has the same size on the page, on a card and in a RiskAssessment. Such points do not
  // add up to the difference from the average patient: risk is not additive on that scale.
  function pointsOf(explanation, probability, contribution) {
    const scale = scaleOf(explanation);
    const p = Math.min(Math.max(probability, 1e-12), 1 - 1e-12);
    return (probability - scale.toP(scale.fromP(p) - contribution)) * 100;
  }

  // "+3.2 percentage points", "-0.4 percentage points", "<0.1 percentage points": the words of
  // models.describe.points_text; `short` gives "+3.2 pp" where a chart has no room.
  function pointsText(points, short) {
    const unit = short ? "pp" : "percentage points";
    if (Math.abs(points) < 0.05) return `<0.1 ${unit}`;
    return `${points >= 0 ? "+" : "-"}${Math.abs(points).toFixed(1)} ${unit}`;
  }

  /* ---------------------------------------------------------------- clinical-use status (issue 10) */

  // Whether a model's scores may inform care, in a clinician's words. An absent or unknown status
  // reads as "for evaluation only" (the manifest's conservative default), never as validated.
  const CLINICAL_USE = {
    validated: { short: "Validated for clinical use", headline: "Validated for clinical use", icon: "✓" },
    evaluation_only: {
      short: "For evaluation only",
      headline: "For evaluation only — not validated for care decisions",
      icon: "⚠",
    },
    teaching_data_only: {
      short: "Teaching data only",
      headline: "Teaching data only — fitted to teaching data, not validated for care decisions",
      icon: "⚠",
    },
  };

  function clinicalUseOf(...sources) {
    const found = sources.find((s) => s && s.clinical_use);
    const use = found ? found.clinical_use : { status: "evaluation_only", reason: "no clinical-use status was stated for this model" };
    const status = use.status in CLINICAL_USE ? use.status : "evaluation_only";
    return { status, reason: use.reason || "", validated: status === "validated", ...CLINICAL_USE[status] };
  }

  function clinicalUseSentence(use) {
    return use.reason ? `${use.headline}: ${use.reason}` : use.headline;
  }

  // Beside a result, in print and on the model page: a bordered block with an icon and words, so
  // the status never rests on colour alone; anything but "validated" is a warning.
  function renderClinicalUse(use, id) {
    return el("div", { class: `use-status use-${use.status}`, id, "data-status": use.status, role: "note", "aria-label": "Clinical-use status" }, [
      el("span", { class: "use-icon", "aria-hidden": "true", text: use.icon }),
      el("p", null, [el("strong", { class: "use-headline", text: use.headline }), use.reason ? `: ${use.reason}` : ""]),
    ]);
  }

  function shortTierLabel(tier) {
    return tier.label.replace(/\s*\(.*\)\s*$/, "");
  }

  // The labelled choices of a coded input: its manifest categories, else the page's own map.
  function choicesOf(spec) {
    if (spec.type === "categorical") return { title: spec.label, options: spec.categories.map((c) => [c.code, c.label]) };
    const fallback = CHOICE_LABELS[spec.name];
    const labels = Object.entries(spec.value_labels || {});
    if (labels.length) {
      labels.sort((a, b) => Number(a[0]) - Number(b[0]));
      if (spec.type === "binary") labels.reverse(); // the "1" answer first, as Yes / No everywhere
      return { title: fallback ? fallback.title : spec.label, options: labels };
    }
    return fallback || null;
  }

  function choiceText(spec, value) {
    const choices = choicesOf(spec);
    if (!choices) return null;
    const hit = choices.options.find(([code]) => String(code) === String(value));
    return hit ? hit[1] : null;
  }

  function describeValue(spec, value) {
    if (value === null || value === undefined) return "not known";
    const labelled = spec.type === "categorical" ? null : choiceText(spec, value);
    if (labelled) return labelled;
    if (spec.type === "binary") return Number(value) === 1 ? "yes" : "no";
    if (spec.type === "categorical") {
      const category = spec.categories.find((c) => c.code === value);
      return category ? category.label : String(value);
    }
    return withUnit(Number(value), spec.unit);
  }

  function factorLabel(spec, value) {
    const choices = choicesOf(spec);
    if (choices && spec.type !== "categorical") return `${choices.title}: ${describeValue(spec, value)}`;
    if (spec.type === "binary" || spec.type === "categorical" || value === null) {
      return `${spec.label}: ${describeValue(spec, value)}`;
    }
    // "20 cigarettes per day", not "Cigarettes per day 20 cigarettes per day" (as models/describe.py)
    if (prettyUnit(spec.unit).toLowerCase() === spec.label.toLowerCase()) return describeValue(spec, value);
    return `${spec.label} ${describeValue(spec, value)}`;
  }

  // The label of a contribution, in the unit the value was entered in when that was not canonical.
  function contributionLabel(spec, contribution, raw) {
    if (spec && raw && typeof raw === "object") {
      return `${spec.label} ${num(raw.value)} ${prettyUnit(raw.unit)} (${withUnit(contribution.value, spec.unit)})`;
    }
    return spec ? factorLabel(spec, contribution.value) : contribution.label;
  }

  function fitText(text, width, charWidth = 6.4) {
    const max = Math.max(4, Math.floor(width / charWidth));
    return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
  }

  /* ---------------------------------------------------------------- Markdown (model cards) */

  // A small, safe renderer for the subset model cards use: headings, paragraphs, lists, tables,
  // block quotes, rules, fenced code, and inline code / bold / italic / links.
  function renderMarkdown(source, headingOffset) {
    const root = document.createDocumentFragment();
    const lines = source.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    const isTableRow = (line) => /^\s*\|.*\|\s*$/.test(line);
    const isSeparator = (line) => /^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$/.test(line);
    const listItem = /^(\s*)([-*+]|\d+[.)])\s+(.*)$/;
    while (i < lines.length) {
      const line = lines[i];
      if (/^\s*$/.test(line)) {
        i += 1;
        continue;
      }
      const heading = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      if (heading) {
        const level = Math.min(6, heading[1].length + headingOffset);
        root.appendChild(el(`h${level}`, null, inline(heading[2])));
        i += 1;
        continue;
      }
      if (/^\s*```/.test(line)) {
        const code = [];
        i += 1;
        while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
        i += 1;
        root.appendChild(el("pre", null, el("code", { text: code.join("\n") })));
        continue;
      }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        root.appendChild(el("hr"));
        i += 1;
        continue;
      }
      if (isTableRow(line) && i + 1 < lines.length && isSeparator(lines[i + 1])) {
        const head = splitRow(line);
        i += 2;
        const body = [];
        while (i < lines.length && isTableRow(lines[i])) body.push(splitRow(lines[i++]));
        root.appendChild(
          el("div", { class: "table-wrap" }, [
            el("table", null, [
              el("thead", null, el("tr", null, head.map((c) => el("th", { scope: "col" }, inline(c))))),
              el("tbody", null, body.map((r) => el("tr", null, r.map((c) => el("td", null, inline(c)))))),
            ]),
          ]),
        );
        continue;
      }
      if (/^\s*>/.test(line)) {
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
        const quote = el("blockquote");
        quote.appendChild(renderMarkdown(quoted.join("\n"), headingOffset));
        root.appendChild(quote);
        continue;
      }
      const item = listItem.exec(line);
      if (item) {
        const ordered = /\d/.test(item[2]);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length) {
          const match = listItem.exec(lines[i]);
          if (!match) break;
          const text = [match[3]];
          i += 1;
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !listItem.test(lines[i])) {
            text.push(lines[i++].trim());
          }
          list.appendChild(el("li", null, inline(text.join(" "))));
        }
        root.appendChild(list);
        continue;
      }
      const paragraph = [];
      while (
        i < lines.length &&
        !/^\s*$/.test(lines[i]) &&
        !/^#{1,6}\s/.test(lines[i]) &&
        !listItem.test(lines[i]) &&
        !/^\s*(```|>)/.test(lines[i]) &&
        !(isTableRow(lines[i]) && i + 1 < lines.length && isSeparator(lines[i + 1]))
      ) {
        paragraph.push(lines[i++].trim());
      }
      root.appendChild(el("p", null, inline(paragraph.join(" "))));
    }
    return root;
  }

  function splitRow(line) {
    const cells = [];
    let current = "";
    let inCode = false;
    const text = line.trim().replace(/^\|/, "").replace(/\|$/, "");
    for (let k = 0; k < text.length; k += 1) {
      const ch = text[k];
      if (ch === "\\" && text[k + 1] === "|") {
        current += "|";
        k += 1;
      } else if (ch === "`") {
        inCode = !inCode;
        current += ch;
      } else if (ch === "|" && !inCode) {
        cells.push(current.trim());
        current = "";
      } else {
        current += ch;
      }
    }
    cells.push(current.trim());
    return cells;
  }

  function inline(text) {
    const nodes = [];
    const pattern = /(`+)([\s\S]*?)\1|\*\*([^*]+?)\*\*|__([^_]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_(?![A-Za-z0-9])|\[([^\]]+)\]\(([^)\s]+)\)/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      if (match.index > last) nodes.push(text.slice(last, match.index));
      if (match[1]) nodes.push(el("code", { text: match[2].trim() }));
      else if (match[3] || match[4]) nodes.push(el("strong", null, inline(match[3] || match[4])));
      else if (match[5] || match[6]) nodes.push(el("em", null, inline(match[5] || match[6])));
      else if (match[7]) {
        const href = match[8];
        const safe = /^(https?:|#|\/)/i.test(href);
        nodes.push(safe ? el("a", { href, rel: "noopener noreferrer" }, inline(match[7])) : match[7]);
      }
      last = pattern.lastIndex;
    }
    if (last < text.length) nodes.push(text.slice(last));
    return nodes;
  }

  /* ---------------------------------------------------------------- API */

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${state.key}` };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, { title: "Network error", detail: "The service could not be reached." });
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function explainError(error) {
    if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
    if (error.status === 401 && state.smart) {
      return "Your session from the EHR has ended or is not valid: launch the page again from the EHR.";
    }
    if (error.status === 401) return `Your API key was not accepted: ${error.message}`;
    if (error.status === 403) return `Your API key is not allowed to do this: ${error.message}`;
    return error.message;
  }

  /* ---------------------------------------------------------------- key and views */

  async function connect(key, smart) {
    const status = $("key-status");
    state.key = key;
    status.textContent = "Connecting…";
    status.className = "key-status";
    try {
      state.models = await api("GET", "/v1/models");
    } catch (error) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORAGE);
      status.textContent = explainError(error);
      status.className = "key-status error";
      return;
    }
    if (!state.models.length) {
      status.textContent = "Connected, but the service has no models loaded.";
      status.className = "key-status error";
      return;
    }
    if (!smart) sessionStorage.setItem(KEY_STORAGE, key); // a launch's session stays in memory
    $("api-key").value = "";
    $("api-key").hidden = true;
    document.querySelector('label[for="api-key"]').hidden = true;
    $("key-connect").hidden = true;
    $("key-forget").hidden = false;
    status.textContent = "Connected (this tab only)";
    status.className = "key-status ok";
    if (smart) showLaunch();
    const select = clear($("model-select"));
    for (const model of state.models) {
      const use = clinicalUseOf(model);
      const status = use.validated ? "" : ` (${use.short.toLowerCase()})`;
      select.appendChild(el("option", { value: model.name, "data-status": use.status, text: `${model.name} — ${model.title}${status}` }));
    }
    $("views").hidden = false;
    $("connect-view").hidden = true;
    const route = parseHash();
    const wanted = state.models.some((m) => m.name === route.model) ? route.model : state.models[0].name;
    select.value = wanted;
    await selectModel(wanted, route.view);
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    const launched = Boolean(state.smart);
    state.smart = null;
    state.chartValues.clear();
    $("launch-banner").hidden = true;
    $("key-forget").textContent = "Forget key";
    state.key = null;
    state.details.clear();
    state.model = null;
    state.features = null;
    state.result = null;
    state.sent = null;
    state.requestSerial += 1;
    $("patient-id").value = "";
    $("patient-name").value = "";
    clear($("form-fields"));
    clear($("form-context"));
    resetResult();
    clear($("model-body"));
    $("views").hidden = true;
    $("score-view").hidden = true;
    $("model-view").hidden = true;
    $("connect-view").hidden = false;
    $("api-key").hidden = false;
    document.querySelector('label[for="api-key"]').hidden = false;
    $("key-connect").hidden = false;
    $("key-forget").hidden = true;
    $("key-status").textContent = launched ? "Session ended: launch again from the EHR" : "Key forgotten";
    $("key-status").className = "key-status";
    history.replaceState(null, "", location.pathname);
    $("api-key").focus();
  }

  function parseHash() {
    const [view, model] = location.hash.replace(/^#/, "").split("/");
    return { view: view === "model" ? "model" : "score", model: model || null };
  }

  // Beside the model picker: the chosen model's clinical-use status in words (a badge, with the
  // reason as its description), so it is known before the form is filled.
  function showPickerStatus(detail) {
    const use = clinicalUseOf(detail, state.models.find((m) => m.name === detail.name));
    const badge = $("model-use");
    badge.hidden = false;
    badge.dataset.status = use.status;
    badge.className = `model-use use-${use.status}`;
    badge.textContent = `${use.icon} ${use.short}`;
    badge.title = clinicalUseSentence(use);
    $("model-use-reason").textContent = clinicalUseSentence(use);
  }

  async function selectModel(name, view) {
    let detail = state.details.get(name);
    if (!detail) {
      try {
        detail = await api("GET", `/v1/models/${encodeURIComponent(name)}`);
      } catch (error) {
        $("key-status").textContent = explainError(error);
        return;
      }
      state.details.set(name, detail);
      // Another model was picked while this one loaded: the later choice wins.
      if ($("model-select").value !== name) return;
    }
    const changed = !state.model || state.model.name !== name;
    state.model = detail;
    showPickerStatus(detail);
    if (changed) {
      state.features = null;
      state.result = null;
      state.sent = null;
      state.requestSerial += 1;
      buildForm(detail);
      if (state.smart) applyChart(detail);
      resetResult();
      renderModelPage(detail);
    }
    showView(view || parseHash().view, false);
  }

  function showView(view, moveFocus) {
    if (!state.model) return;
    const hash = `#${view}/${state.model.name}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    $("score-view").hidden = view !== "score";
    $("model-view").hidden = view !== "model";
    $("nav-score").href = `#score/${state.model.name}`;
    $("nav-model").href = `#model/${state.model.name}`;
    for (const [id, name] of [["nav-score", "score"], ["nav-model", "model"]]) {
      if (name === view) $(id).setAttribute("aria-current", "page");
      else $(id).removeAttribute("aria-current");
    }
    redrawCharts();
    if (moveFocus) (view === "model" ? $("model-heading") : $("score-heading")).focus();
  }

  /* ---------------------------------------------------------------- the patient form */

  const fieldId = (name) => `f-${name}`;

  function buildForm(detail) {
    const container = clear($("form-fields"));
    $("form-intro").textContent =
      `${detail.title} — ${detail.name} ${detail.version}. Fields marked “optional” may be left ` +
      "empty; the result says how the model handles them.";
    const byGroup = new Map();
    for (const spec of detail.features) {
      const group = spec.group || FEATURE_GROUPS[spec.name] || "Other inputs";
      if (!byGroup.has(group)) byGroup.set(group, []);
      byGroup.get(group).push(spec);
    }
    const rank = (g) => (GROUP_ORDER.includes(g) ? GROUP_ORDER.indexOf(g) : GROUP_ORDER.length - 1.5);
    const groups = [...byGroup.entries()].sort((a, b) => rank(a[0]) - rank(b[0]));
    buildContext(detail);
    for (const [legend, specs] of groups) {
      const fieldset = el("fieldset", { class: "group", "data-group": legend }, el("legend", { text: legend }));
      const grid = el("div", { class: "field-grid" });
      for (const spec of specs) grid.appendChild(buildField(spec));
      fieldset.appendChild(grid);
      container.appendChild(fieldset);
    }
  }

  // Facts that decide whether the model applies (not model inputs): one checkbox per context
  // named by the model's applicability rules.
  function contextRules(detail) {
    const seen = new Set();
    return (detail.applicability || []).filter((rule) => {
      if (!rule.context || !["context_false", "context_required"].includes(rule.kind) || seen.has(rule.context)) return false;
      seen.add(rule.context);
      return true;
    });
  }

  const ACRONYMS = new Set(["ascvd", "chd", "cvd", "ckd", "copd", "mi", "hiv", "icu"]);

  // A context name as a question label: "established_ascvd" -> "Established ASCVD".
  function humanise(name) {
    const text = name
      .split("_")
      .map((word) => (ACRONYMS.has(word) ? word.toUpperCase() : word))
      .join(" ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  // Each context fact is Yes / No / Not stated (the default): only what the clinician states is
  // sent, so "not stated" never turns into a claimed "no" in the request or the audit trail.
  function buildContext(detail) {
    const holder = clear($("form-context"));
    const rules = contextRules(detail);
    if (!rules.length) return;
    const grid = el("div", { class: "field-grid" });
    for (const rule of rules) {
      const id = `c-${rule.context}`;
      const hintId = `ch-${rule.context}`;
      const meaning = rule.kind === "context_false" ? "If yes, the model does not apply." : "The model applies only if yes.";
      const options = [["true", "Yes"], ["false", "No"], ["", "Not stated"]];
      grid.appendChild(
        el("fieldset", { class: "field binary context", "data-context": rule.context, "data-kind": rule.kind, "aria-describedby": hintId }, [
          el("legend", { text: humanise(rule.context) }),
          el(
            "div",
            { class: "segmented" },
            options.flatMap(([value, text]) => {
              const optionId = `${id}-${value === "" ? "na" : value}`;
              return [el("input", { type: "radio", id: optionId, name: id, value, checked: value === "" }), el("label", { for: optionId, text })];
            }),
          ),
          el("p", { class: "hint", id: hintId, text: `${rule.description}. ${meaning} Source: ${rule.source}` }),
        ]),
      );
    }
    holder.appendChild(
      el("fieldset", { class: "group", "data-group": "Clinical context" }, [
        el("legend", { text: "Clinical context (decides whether the model applies)" }),
        grid,
      ]),
    );
  }

  function readContext() {
    if (!state.model) return {};
    const context = {};
    for (const rule of contextRules(state.model)) {
      const checked = document.querySelector(`input[name="c-${rule.context}"]:checked`);
      if (checked && checked.value !== "") context[rule.context] = checked.value === "true";
    }
    return context;
  }

  function patientContext() {
    return { id: $("patient-id").value.trim(), name: $("patient-name").value.trim() };
  }

  function optionalTag(spec) {
    return spec.required ? null : el("span", { class: "optional", text: "optional" });
  }

  function rangeHint(spec) {
    const parts = [];
    const q = spec.distribution ? spec.distribution.quantiles : {};
    if (q && q.p01 !== undefined && q.p99 !== undefined) {
      parts.push(`Most training patients: ${withUnit(q.p01, null)}–${withUnit(q.p99, spec.unit)}.`);
    }
    if (spec.minimum !== null && spec.maximum !== null && spec.type !== "binary") {
      parts.push(`Accepted: ${num(spec.minimum)}–${num(spec.maximum)}.`);
    }
    return parts.join(" ");
  }

  function buildField(spec) {
    const id = fieldId(spec.name);
    const hintId = `h-${spec.name}`;
    const errorId = `e-${spec.name}`;
    const choices = choicesOf(spec);
    const hint = el("p", { class: "hint", id: hintId }, [
      spec.description,
      (spec.type === "numeric" || spec.type === "ordinal") && !choices ? ` ${rangeHint(spec)}` : "",
      spec.required ? "" : ` If not known: ${spec.missing_handling || "handled by the model as missing"}.`,
    ]);
    const error = el("p", { class: "field-error", id: errorId, hidden: true });
    if (spec.type === "binary") {
      const options = choices ? choices.options.map(([code, text]) => [String(code), text]) : [["1", "Yes"], ["0", "No"]];
      if (!spec.required) options.push(["", "Not known"]);
      const segmented = el(
        "div",
        { class: "segmented" },
        options.flatMap(([value, text]) => {
          const optionId = `${id}-${value === "" ? "na" : value}`;
          return [
            el("input", {
              type: "radio",
              id: optionId,
              name: id,
              value,
              required: spec.required,
              checked: value === "" && !spec.required,
            }),
            el("label", { for: optionId, text }),
          ];
        }),
      );
      return el(
        "fieldset",
        { class: "field binary", "data-feature": spec.name, "aria-describedby": `${hintId} ${errorId}` },
        [el("legend", null, [choices ? choices.title : spec.label, optionalTag(spec)]), segmented, hint, error],
      );
    }
    let control;
    if (choices) {
      // Categorical, or an ordinal with labelled levels: a list of words, never a number code.
      control = el("select", { id, required: spec.required, "aria-describedby": `${hintId} ${errorId}` }, [
        el("option", { value: "", text: spec.required ? "Select…" : "Not known" }),
        ...choices.options.map(([code, text]) => el("option", { value: String(code), text })),
      ]);
    } else {
      control = el("input", {
        id,
        type: "number",
        inputmode: spec.type === "ordinal" ? "numeric" : "decimal",
        step: spec.type === "ordinal" ? "1" : "any",
        min: spec.minimum,
        max: spec.maximum,
        required: spec.required,
        "aria-describedby": `${hintId} ${errorId}`,
      });
    }
    const row = el("div", { class: "input-row" }, control);
    if (spec.alternative_units && spec.alternative_units.length) {
      const unitSelect = el(
        "select",
        { id: `u-${spec.name}`, class: "unit-select", "aria-label": `Unit for ${spec.label}` },
        [spec.unit, ...spec.alternative_units.map((u) => u.unit)].map((u) =>
          el("option", { value: u, text: prettyUnit(u) }),
        ),
      );
      unitSelect.addEventListener("change", () => applyUnitLimits(spec, control, unitSelect.value));
      row.appendChild(unitSelect);
    } else if (prettyUnit(spec.unit)) {
      row.appendChild(el("span", { class: "unit", text: prettyUnit(spec.unit), "aria-hidden": "true" }));
    }
    const labelText = prettyUnit(spec.unit) && !(spec.alternative_units || []).length
      ? [spec.label, el("span", { class: "visually-hidden", text: ` (${prettyUnit(spec.unit)})` })]
      : [spec.label];
    if (!spec.required && !choices) control.setAttribute("placeholder", "Not known");
    return el("div", { class: `field ${spec.type}${choices ? " choice" : ""}`, "data-feature": spec.name }, [
      el("label", { for: id }, [...(choices && spec.type !== "categorical" ? [choices.title] : labelText), optionalTag(spec)]),
      row,
      hint,
      error,
    ]);
  }

  // Plausible limits are stored in the canonical unit: convert them for the unit being typed in.
  function applyUnitLimits(spec, input, unit) {
    const alternative = spec.alternative_units.find((u) => u.unit === unit);
    const toUnit = (v) => (alternative ? (v - (alternative.offset || 0)) / alternative.factor : v);
    if (spec.minimum !== null) input.min = String(Number(toUnit(spec.minimum).toPrecision(4)));
    if (spec.maximum !== null) input.max = String(Number(toUnit(spec.maximum).toPrecision(4)));
  }

  function readField(spec) {
    const id = fieldId(spec.name);
    if (spec.type === "binary") {
      const checked = document.querySelector(`input[name="${id}"]:checked`);
      return !checked || checked.value === "" ? null : Number(checked.value);
    }
    const control = $(id);
    if (control.value === "") return null;
    if (spec.type === "categorical") return control.value;
    if (control.tagName === "SELECT") return Number(control.value); // a labelled ordinal level
    const value = Number(control.value);
    const unitSelect = $(`u-${spec.name}`);
    if (unitSelect && unitSelect.value !== spec.unit) return { value, unit: unitSelect.value };
    return value;
  }

  function readForm() {
    const features = {};
    for (const spec of state.model.features) features[spec.name] = readField(spec);
    return features;
  }

  function fillTypical() {
    if (!state.model) return;
    for (const spec of state.model.features) {
      const dist = spec.distribution;
      if (!dist) continue;
      const id = fieldId(spec.name);
      const rates = Object.entries(dist.category_rates || {});
      const mode = rates.length ? rates.reduce((a, b) => (b[1] > a[1] ? b : a))[0] : null;
      if (spec.type === "binary" && mode !== null) {
        const radio = $(`${id}-${Number(mode) === 1 ? "1" : "0"}`);
        if (radio) radio.checked = true;
      } else if (spec.type === "categorical" && mode !== null) {
        $(id).value = mode;
      } else if (dist.quantiles && dist.quantiles.p50 !== undefined) {
        const unitSelect = $(`u-${spec.name}`);
        if (unitSelect) {
          unitSelect.value = spec.unit;
          applyUnitLimits(spec, $(id), spec.unit);
        }
        $(id).value = String(spec.type === "ordinal" ? Math.round(dist.quantiles.p50) : num(dist.quantiles.p50));
      }
    }
    formChanged(); // programmatic changes fire no input events
  }

  /* ---------------------------------------------------------------- the result follows the form */

  // What the form says now, as it would be sent (compared with what the shown result came from).
  function formSnapshot() {
    return JSON.stringify({ features: readForm(), context: readContext(), patient: patientContext() });
  }

  function firstInvalidControl() {
    for (const control of $("patient-form").querySelectorAll("input, select")) {
      if (!control.hidden && !control.checkValidity()) return control;
    }
    return null;
  }

  function controlLabel(control) {
    const field = control.closest("[data-feature]");
    const spec = field && state.model ? specOf(state.model, field.dataset.feature) : null;
    if (spec) return (choicesOf(spec) && spec.type !== "categorical" ? choicesOf(spec).title : spec.label);
    return control.labels && control.labels.length ? control.labels[0].textContent.trim() : control.id;
  }

  // Any change to the form: an invalid value or another patient clears the result; any other
  // change marks it out of date until the form says again exactly what the result came from.
  function formChanged(event) {
    if (!state.sent) return;
    const target = event && event.target;
    if (target && (target.id === "patient-id" || target.id === "patient-name")) {
      clearResult("Result cleared: the patient details changed.");
      return;
    }
    const invalid = firstInvalidControl();
    if (invalid) {
      const why = invalid.validationMessage ? ` (${invalid.validationMessage})` : "";
      clearResult(`Result cleared: ${controlLabel(invalid)} is not a valid value${why}.`);
      return;
    }
    setStale(formSnapshot() !== state.sent);
  }

  function setStale(stale) {
    $("result-stale").hidden = !stale;
    $("result").classList.toggle("is-stale", stale);
    $("result").dataset.stale = stale ? "true" : "false";
    if (stale) $("result-status").textContent = "The result is out of date: the inputs have changed.";
  }

  function clearResult(message) {
    state.requestSerial += 1; // a late answer to an earlier request is dropped
    state.features = null;
    state.result = null;
    state.sent = null;
    resetResult();
    if (message) {
      $("result-status").textContent = message;
      $("result-body").prepend(el("p", { class: "alert warning", id: "result-cleared", text: message }));
    }
  }

  function clearFieldErrors() {
    for (const node of document.querySelectorAll(".field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    $("form-errors").hidden = true;
    clear($("form-errors"));
  }

  function showFieldErrors(error) {
    const errors = (error.problem && error.problem.errors) || [];
    const box = clear($("form-errors"));
    box.appendChild(el("p", { class: "error-title", text: explainError(error) }));
    const list = el("ul");
    let first = null;
    for (const item of errors) {
      const name = String(item.field || "").replace(/^features\./, "");
      const spec = state.model.features.find((f) => f.name === name);
      const message = `${item.message}${item.allowed ? ` (allowed: ${item.allowed})` : ""}`;
      list.appendChild(el("li", { text: `${spec ? spec.label : item.field}: ${message}` }));
      if (!spec) continue;
      const fieldError = $(`e-${name}`);
      fieldError.textContent = message;
      fieldError.hidden = false;
      const control = $(fieldId(name)) || document.querySelector(`input[name="${fieldId(name)}"]`);
      if (control) {
        control.setAttribute("aria-invalid", "true");
        first = first || control;
      }
    }
    if (errors.length) box.appendChild(list);
    box.hidden = false;
    if (first) first.focus();
  }

  async function submitPatient(event) {
    event.preventDefault();
    if (!state.model) return;
    clearFieldErrors();
    const form = $("patient-form");
    if (!form.reportValidity()) {
      if (state.sent) clearResult("Result cleared: a value on the form is not valid.");
      return;
    }
    const features = readForm();
    const context = readContext();
    const patient = patientContext();
    const snapshot = formSnapshot();
    const body = { features };
    if (Object.keys(context).length) body.context = context;
    // The identifier goes in the body only (the audit trail keeps a keyed pseudonym); the name never leaves the page.
    if (patient.id) body.patient_id = patient.id;
    const serial = ++state.requestSerial;
    const model = state.model;
    const button = $("submit-button");
    button.disabled = true;
    button.textContent = "Calculating…";
    $("result").setAttribute("aria-busy", "true");
    try {
      const result = await api("POST", `/v1/models/${encodeURIComponent(model.name)}/predict`, body);
      if (serial !== state.requestSerial) return;
      state.features = features;
      state.result = result;
      state.sent = snapshot;
      renderResult(model, result, features, patient, new Date());
      if (formSnapshot() !== snapshot) setStale(true); // edited while the request was in flight
      if (result.probability !== null && result.status !== "not_applicable") loadCurves(model, features, result, serial);
      bringResultIntoView();
    } catch (error) {
      if (serial !== state.requestSerial) return;
      state.sent = null;
      state.result = null;
      state.features = null;
      if (error instanceof ApiError && error.status === 422) {
        resetResult();
        $("result-status").textContent = "No result: the service did not accept a value; see the form.";
        showFieldErrors(error);
      } else {
        showResultError(error);
        bringResultIntoView();
      }
    } finally {
      button.disabled = false;
      button.textContent = "Calculate risk";
      $("result").removeAttribute("aria-busy");
    }
  }

  /* ---------------------------------------------------------------- result */

  // After Calculate the answer is where the eyes and the focus are (the form is long; the result
  // would otherwise sit far above the viewport). The live status line is what screen readers hear.
  function bringResultIntoView() {
    const heading = $("result-heading");
    heading.scrollIntoView({ block: "start" });
    heading.focus({ preventScroll: true });
  }

  function resetResult() {
    state.redraw = [];
    $("result-stale").hidden = true;
    $("result").classList.remove("is-stale");
    $("result").dataset.stale = "false";
    $("result-status").textContent = "";
    clear($("result-body")).appendChild(
      el("p", { class: "placeholder" }, [
        "Fill in the form and press ",
        el("strong", { text: "Calculate risk" }),
        ". The probability, its risk tier, what drives it and any data-quality warnings will appear here.",
      ]),
    );
  }

  function showResultError(error) {
    state.redraw = [];
    setStale(false);
    $("result-status").textContent = explainError(error);
    clear($("result-body")).appendChild(el("div", { class: "alert error", role: "alert", text: explainError(error) }));
  }

  function specOf(model, name) {
    return model.features.find((f) => f.name === name);
  }

  function tierIndex(model, tierName) {
    return Math.max(0, model.tiers.findIndex((t) => t.name === tierName));
  }

  const DATE_FORMAT = { day: "numeric", month: "short", year: "numeric" };
  const TIME_FORMAT = { ...DATE_FORMAT, hour: "2-digit", minute: "2-digit" };

  // Who and when: on screen and on paper, from memory only.
  function renderContextLine(patient, when) {
    const who = [patient.name, patient.id ? `ID ${patient.id}` : ""].filter(Boolean).join(" · ");
    return el("p", { class: "result-context", id: "result-context" }, [
      el("strong", { text: "Patient: " }),
      who || "not named on this page",
      ` · calculated ${when.toLocaleString("en-GB", TIME_FORMAT)}`,
    ]);
  }

  // The inputs the result came from (for print and for checking): labelled values, not codes.
  function renderInputsUsed(model, features) {
    const items = model.features.map((spec) => {
      const raw = features[spec.name];
      const shown = raw && typeof raw === "object" ? `${num(raw.value)} ${prettyUnit(raw.unit)}` : describeValue(spec, raw);
      const choices = choicesOf(spec);
      const label = choices && spec.type !== "categorical" ? choices.title : spec.label;
      return el("li", { "data-feature": spec.name }, [el("span", { class: "input-name", text: `${label}: ` }), shown]);
    });
    const context = readContext();
    for (const rule of contextRules(model)) {
      const stated = rule.context in context ? (context[rule.context] ? "yes" : "no") : "not stated";
      items.push(el("li", { "data-context": rule.context }, [el("span", { class: "input-name", text: `${humanise(rule.context)}: ` }), stated]));
    }
    return el("section", { class: "inputs-used", id: "inputs-used", "aria-labelledby": "inputs-used-heading" }, [
      el("h3", { id: "inputs-used-heading", text: "Inputs used" }),
      el("ul", { class: "inputs-list" }, items),
    ]);
  }

  function renderModelRef(model, result) {
    const ref = result.model || { name: model.name, version: model.version, sha256: model.sha256 };
    return el("div", { class: "model-ref-block" }, [
      el("p", { class: "model-ref" }, [
        "Model ",
        el("strong", { text: `${ref.name} ${ref.version}` }),
        ` (sha256 ${ref.sha256.slice(0, 16)}…) · `,
        el("a", { href: `#model/${model.name}`, id: "card-link", text: "Model card and validation" }),
      ]),
      el("p", { class: "clinical-use", id: "clinical-use" }, [
        el("strong", { text: "Clinical use: " }),
        `${clinicalUseOf(result, model).short}; decision support only, within the intended population. Intended use: ${model.intended_use}`,
      ]),
    ]);
  }

  function renderWarnings(warnings) {
    if (!warnings || !warnings.length) return null;
    return el("div", { class: "alert warning", id: "result-warnings" }, [
      el("h3", { text: "Read before using this result" }),
      el("ul", null, warnings.map((w) => el("li", { "data-code": w.code, text: w.message }))),
    ]);
  }

  // Outside the intended population: the rules it failed, with their sources, and nothing that
  // looks like a score (no probability, tier, chart or what-if).
  function renderNotApplicable(model, result, features, patient, when) {
    const failed = (result.applicability && result.applicability.failed) || [];
    const body = clear($("result-body"));
    const use = clinicalUseOf(result, model);
    append(body, [
      renderContextLine(patient, when),
      renderClinicalUse(use, "result-use"),
      el("div", { class: "not-applicable", id: "not-applicable", role: "alert" }, [
        el("h3", { text: "Not applicable for this patient" }),
        el("p", { text: `${model.title} was not developed or validated for this patient, so no risk is shown. Use clinical judgement or a tool validated for this patient.` }),
        el(
          "ul",
          { class: "failed-rules" },
          failed.map((rule) =>
            el("li", { "data-rule": rule.id }, [
              el("strong", { text: rule.description }),
              rule.detail ? ` — ${rule.detail}` : "",
              el("span", { class: "rule-source", text: ` Source: ${rule.source}` }),
            ]),
          ),
        ),
      ]),
      renderWarnings(result.warnings),
      renderInputsUsed(model, features),
      renderModelRef(model, result),
    ]);
    $("result-status").textContent =
      `Not applicable for this patient: ${failed.map((r) => r.description).join("; ") || "outside the intended population"}. No risk is shown.` +
      (use.validated ? "" : ` ${use.short}.`);
  }

  function renderResult(model, result, features, patient, when) {
    state.redraw = [];
    setStale(false);
    if (result.status === "not_applicable" || result.probability === null || result.probability === undefined) {
      renderNotApplicable(model, result, features, patient, when);
      return;
    }
    const body = clear($("result-body"));
    const quality = result.data_quality;
    const warnings = quality.missing.length + quality.out_of_training_range.length + (result.warnings || []).length;
    const tierColour = `tier-${tierIndex(model, result.tier.name)}-of-${model.tiers.length}`;
    const research = result.applicability && result.applicability.research_use && !result.applicability.applicable;

    const use = clinicalUseOf(result, model);
    body.appendChild(renderContextLine(patient, when));
    body.appendChild(renderClinicalUse(use, "result-use"));
    if (research) {
      body.appendChild(el("p", { class: "alert error", id: "research-use", text: "Research use only: this patient is outside the model's intended population. Not for clinical decisions." }));
    }
    const uncertainty = result.uncertainty;
    body.appendChild(
      el("div", { class: "summary" }, [
        el("div", { class: "probability-block" }, [
          el("span", {
            class: "probability",
            id: "probability",
            "data-probability": String(result.probability),
            text: pct(result.probability),
          }),
          el("span", { class: "probability-caption", text: model.title }),
        ]),
        el("div", { class: "tier-block" }, [
          el("span", { class: `tier-badge ${tierColour}`, id: "tier", text: result.tier.label }),
          el("p", { class: "tier-action", text: result.tier.action }),
        ]),
        uncertainty
          ? el("p", { class: "uncertainty", id: "uncertainty" }, [el("strong", { text: "How sure: " }), uncertainty.statement])
          : null,
      ]),
    );
    append(body, renderWarnings(result.warnings));
    body.appendChild(renderQuality(model, quality));

    const scale = el("figure", { class: "chart tier-scale" });
    const scaleCaption = el("figcaption", {
      text: `Risk tiers of ${model.name} ${model.version}: the marker is this patient.`,
    });
    const scaleHolder = el("div", { class: "chart-holder" });
    scale.appendChild(scaleHolder);
    scale.appendChild(scaleCaption);
    body.appendChild(scale);
    addChart(() => drawTierScale(scaleHolder, model.tiers, [{ p: result.probability, label: `This patient ${pct(result.probability)}`, kind: "now" }]));

    body.appendChild(renderWaterfallSection(model, result, features));
    body.appendChild(renderInputsUsed(model, features));
    body.appendChild(
      el("section", { class: "curves", id: "curves", "aria-labelledby": "curves-heading" }, [
        el("h3", { id: "curves-heading", text: "How the modifiable factors change the risk" }),
        el("p", { class: "section-note", text: "Loading risk curves…" }),
      ]),
    );
    body.appendChild(renderWhatIf(model, result));
    body.appendChild(renderModelRef(model, result));
    redrawCharts();
    $("result-status").textContent =
      `Risk ${pct(result.probability)}, ${shortTierLabel(result.tier)} tier. ` +
      (use.validated ? "" : `${use.short}: not validated for care decisions. `) +
      (uncertainty ? `${uncertainty.statement} ` : "") +
      (warnings ? `${warnings} warning${warnings > 1 ? "s" : ""}.` : "No data-quality warnings.");
  }

  function renderQuality(model, quality) {
    const items = [];
    for (const m of quality.missing) {
      const spec = specOf(model, m.feature);
      items.push(el("li", null, [el("strong", { text: `${spec ? spec.label : m.feature} missing: ` }), m.handling]));
    }
    for (const o of quality.out_of_training_range) {
      const spec = specOf(model, o.feature);
      const unit = spec ? spec.unit : null;
      items.push(
        el("li", { "data-feature": o.feature }, [
          el("strong", { text: `${spec ? spec.label : o.feature} ${withUnit(o.value, unit)} is outside the training range ` }),
          `(${withUnit(o.training_p01, unit)} – ${withUnit(o.training_p99, unit)}, the 1st–99th percentile of training patients). ` +
            "The model has seen few patients like this; treat the score with caution.",
        ]),
      );
    }
    const notes = quality.unit_conversions.map((u) => {
      const spec = specOf(model, u.feature);
      return el("li", {
        text: `${spec ? spec.label : u.feature}: ${num(u.value)} ${prettyUnit(u.unit)} converted to ${withUnit(u.converted_value, u.canonical_unit)}.`,
      });
    });
    const wrap = el("div", { class: "quality" });
    if (items.length) {
      wrap.appendChild(
        el("div", { class: "alert warning", id: "quality-warnings" }, [
          el("h3", { text: "Data-quality warnings" }),
          el("ul", null, items),
        ]),
      );
    } else {
      wrap.appendChild(el("p", { class: "quality-ok", text: "All inputs present and within the training range." }));
    }
    if (notes.length) wrap.appendChild(el("ul", { class: "unit-notes" }, notes));
    return wrap;
  }

  function addChart(draw) {
    state.redraw.push(draw);
  }

  function redrawCharts() {
    for (const draw of state.redraw) draw();
    if (state.modelRedraw) state.modelRedraw();
  }

  /* ------------------------------------------------ tier scale (equal-width bands, all thresholds) */

  function tierScaleX(tiers, p, left, width) {
    const band = width / tiers.length;
    let i = tiers.length - 1;
    while (i > 0 && p < tiers[i].lower) i -= 1;
    const lower = tiers[i].lower;
    const upper = tiers[i].upper === null ? 1 : tiers[i].upper;
    const within = Math.min(1, Math.max(0, (p - lower) / (upper - lower)));
    return left + band * (i + within);
  }

  function drawTierScale(holder, tiers, markers) {
    const width = Math.max(280, holder.clientWidth || 560);
    const left = 8;
    const inner = width - 16;
    const band = inner / tiers.length;
    const colours = TIER_COLOURS[tiers.length] || TIER_COLOURS[3];
    const barTop = 30;
    const barHeight = 28;
    const height = markers.length > 1 ? 104 : 78;
    const parts = [];
    tiers.forEach((tier, i) => {
      const x = left + i * band;
      parts.push(svg("rect", { x, y: barTop, width: band, height: barHeight, fill: colours[i] || colours[colours.length - 1], class: "tier-band" }));
      parts.push(
        svg("text", { x: x + band / 2, y: barTop + barHeight / 2 + 4, "text-anchor": "middle", class: "band-label", text: fitText(shortTierLabel(tier), band - 6, 6.6) }),
      );
      if (i > 0) {
        parts.push(svg("line", { x1: x, x2: x, y1: barTop - 2, y2: barTop + barHeight + 4, class: "threshold" }));
      }
      parts.push(svg("text", { x: i === 0 ? x : x, y: barTop + barHeight + 16, "text-anchor": i === 0 ? "start" : "middle", class: "tick-label", text: pctShort(tier.lower) }));
    });
    parts.push(svg("text", { x: left + inner, y: barTop + barHeight + 16, "text-anchor": "end", class: "tick-label", text: "100%" }));
    markers.forEach((marker, k) => {
      const x = tierScaleX(tiers, marker.p, left, inner);
      const above = k === 0;
      const labelY = above ? 14 : barTop + barHeight + 36;
      const anchor = x < 70 ? "start" : x > width - 70 ? "end" : "middle";
      parts.push(svg("line", { x1: x, x2: x, y1: above ? 18 : barTop, y2: above ? barTop + barHeight : barTop + barHeight + 24, class: `marker-line ${marker.kind}` }));
      const tri = above
        ? `${x - 6},${barTop - 8} ${x + 6},${barTop - 8} ${x},${barTop}`
        : `${x - 6},${barTop + barHeight + 8} ${x + 6},${barTop + barHeight + 8} ${x},${barTop + barHeight}`;
      parts.push(svg("polygon", { points: tri, class: `marker ${marker.kind}` }));
      parts.push(svg("text", { x, y: labelY, "text-anchor": anchor, class: `marker-label ${marker.kind}`, text: marker.label }));
    });
    const description = tiers
      .map((t) => `${shortTierLabel(t)} ${t.upper === null ? `${pctShort(t.lower)} and above` : `${pctShort(t.lower)} to below ${pctShort(t.upper)}`}`)
      .join("; ");
    const markersText = markers.map((m) => m.label).join("; ");
    clear(holder).appendChild(
      svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Risk tiers: ${description}. ${markersText}.`, class: "tier-svg" }, parts),
    );
  }

  /* ------------------------------------------------ waterfall: base risk -> this patient */

  // A feature with no declared clinical direction is shown as an association of the training
  // data, never as something that "raised" or "lowered" the risk.
  function isAssociation(spec) {
    return Boolean(spec) && spec.direction === 0;
  }

  // One row per contribution, as the API orders them (largest effect first): its label, its
  // sentence (the API's, from models/describe.py) and its size in percentage points of this
  // patient's risk by the CDS cards' rule (pointsOf). Nothing on the model's own scale is shown.
  function contributionRows(model, result, features) {
    const explanation = result.explanation;
    return explanation.contributions.map((c) => {
      const spec = specOf(model, c.feature);
      const kind = c.direction === "raised" ? "raise" : c.direction === "lowered" ? "lower" : "none";
      const points = kind === "none" ? 0 : pointsOf(explanation, result.probability, c.contribution);
      return {
        c,
        kind,
        points,
        association: kind !== "none" && isAssociation(spec),
        label: contributionLabel(spec, c, features[c.feature]),
        change: kind === "none" ? "no effect" : pointsText(points),
        short: kind === "none" ? "0" : pointsText(points, true),
      };
    });
  }

  function renderWaterfallSection(model, result, features) {
    const explanation = result.explanation;
    const holder = el("div", { class: "chart-holder" });
    const rows = contributionRows(model, result, features);
    const associations = rows.some((r) => r.association);
    const table = el("details", { class: "table-details" }, [
      el("summary", { text: "Contributions as a table" }),
      el("div", { class: "table-wrap" }, [
        el("table", { id: "contributions-table" }, [
          el("thead", null, el("tr", null, ["Factor", "In words", "Change in risk"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", null, rows.map((r) => el("tr", { "data-feature": r.c.feature }, [r.label, r.c.text, r.change].map((v) => el("td", { text: v }))))),
        ]),
      ]),
    ]);
    const section = el("section", { class: "waterfall", "aria-labelledby": "waterfall-heading" }, [
      el("h3", { id: "waterfall-heading", text: "What drives this risk" }),
      el("p", { class: "section-note", id: "waterfall-note" }, [
        `Average patient ${pct(explanation.base_probability)}, this patient ${pct(result.probability)}. `,
        "Each bar: the change in this patient's risk in percentage points (pp), the risk as calculated minus the risk without that input's share, other inputs as entered (as on the EHR cards); largest first. ",
        el("span", { class: "swatch raise", "aria-hidden": "true" }),
        "raises ",
        el("span", { class: "swatch lower", "aria-hidden": "true" }),
        "lowers. The bars need not add up to the difference from the average patient.",
        associations ? " Pale bars marked “assoc.” are associations in the training data for inputs with no established clinical direction: they describe the model, not a cause." : "",
      ]),
      holder,
      table,
    ]);
    addChart(() => drawWaterfall(holder, result, rows));
    return section;
  }

  // Bars from a zero line, in percentage points (length = the number beside it).
  function drawWaterfall(holder, result, rows) {
    const width = Math.max(320, holder.clientWidth || 640);
    const labelWidth = Math.min(300, Math.max(140, width * 0.4));
    const valueWidth = rows.some((r) => r.association) ? 100 : 66;
    const x0 = labelWidth + 10;
    const x1 = width - valueWidth - 6;
    const top = 26;
    const rowHeight = 24;
    const height = top + rows.length * rowHeight + 6;

    let d0 = Math.min(0, ...rows.map((r) => r.points));
    let d1 = Math.max(0, ...rows.map((r) => r.points));
    if (d1 - d0 < 1) {
      d0 = Math.min(d0, d1 - 1);
      d1 = Math.max(d1, d0 + 1);
    }
    const ticks = niceTicks(d0, d1, Math.max(2, Math.floor((x1 - x0) / 55)));
    d0 = Math.min(d0, ticks[0]);
    d1 = Math.max(d1, ticks[ticks.length - 1]);
    const x = (v) => x0 + ((v - d0) / (d1 - d0)) * (x1 - x0);
    const parts = [];

    for (const t of ticks) {
      parts.push(svg("line", { x1: x(t), x2: x(t), y1: top - 4, y2: height - 4, class: t === 0 ? "zero-line" : "grid" }));
      const text = t === 0 ? "0" : `${t > 0 ? "+" : "−"}${num(Math.abs(t))}`;
      parts.push(svg("text", { x: x(t), y: top - 8, "text-anchor": "middle", class: "tick-label", text }));
    }
    if (!ticks.includes(0)) parts.push(svg("line", { x1: x(0), x2: x(0), y1: top - 4, y2: height - 4, class: "zero-line" }));
    parts.push(svg("text", { x: width - 4, y: top - 8, "text-anchor": "end", class: "axis-title", text: "pp" }));

    const rowY = (i) => top + i * rowHeight;
    rows.forEach((row, i) => {
      const xa = x(Math.min(0, row.points));
      const xb = x(Math.max(0, row.points));
      const value = row.association ? `assoc. ${row.short}` : row.short;
      parts.push(
        svg("g", { class: "wf-row", "data-feature": row.c.feature }, [
          svg("title", { text: `${row.c.text}: ${row.change}` }),
          svg("text", { x: labelWidth, y: rowY(i) + rowHeight / 2 + 4, "text-anchor": "end", class: "row-label" }, [fitText(row.label, labelWidth - 4)]),
          svg("rect", {
            x: xa,
            y: rowY(i) + 5,
            width: Math.max(2, xb - xa),
            height: rowHeight - 10,
            rx: 2,
            class: `wf-bar ${row.kind}${row.association ? " association" : ""}`,
            "data-feature": row.c.feature,
            "data-points": row.points.toFixed(6),
          }),
          svg("text", { x: width - 4, y: rowY(i) + rowHeight / 2 + 4, "text-anchor": "end", class: `row-value ${row.kind}`, text: value }),
        ]),
      );
    });
    clear(holder).appendChild(
      svg(
        "svg",
        {
          width,
          height,
          viewBox: `0 0 ${width} ${height}`,
          role: "img",
          class: "waterfall-svg",
          "aria-label": `How much each input changes this patient's risk of ${pct(result.probability)}, in percentage points; the table below lists them.`,
        },
        parts,
      ),
    );
  }

  /* ------------------------------------------------ risk curves for the top factors */

  async function loadCurves(model, features, result, serial) {
    // Curves are what-ifs: only for inputs a patient or clinician can change (as the API allows).
    const top = result.explanation.contributions
      .filter((c) => c.feature !== "other_features" && Math.abs(c.contribution) > 1e-9)
      .filter((c) => (specOf(model, c.feature) || {}).modifiable)
      .slice(0, TOP_FACTORS)
      .map((c) => c.feature);
    const section = $("curves");
    if (!top.length) {
      append(clear(section), [el("h3", { id: "curves-heading", text: "How the modifiable factors change the risk" }), el("p", { class: "section-note", id: "curves-none", text: "No modifiable input changes this patient's risk." })]);
      return;
    }
    let response;
    try {
      response = await api("POST", `/v1/models/${encodeURIComponent(model.name)}/curves`, {
        features,
        features_to_vary: top,
        points: CURVE_POINTS,
      });
    } catch (error) {
      if (serial !== state.requestSerial) return;
      append(clear(section), [
        el("h3", { id: "curves-heading", text: "How the modifiable factors change the risk" }),
        el("p", { class: "alert error", text: `Risk curves unavailable: ${explainError(error)}` }),
      ]);
      return;
    }
    if (serial !== state.requestSerial) return;
    const method = model.explanation_method === "linear" ? "the logistic model's exact shape" : "the model's exact response (individual conditional expectation)";
    append(clear(section), [
      el("h3", { id: "curves-heading", text: "How the modifiable factors change the risk" }),
      el("p", { class: "section-note", text: `Predicted risk if only this one input changed and everything else stayed as entered: ${method}, across the range covering 98% of training patients. The dot is this patient.` }),
    ]);
    const grid = el("div", { class: "curve-grid" });
    for (const curve of response.curves) {
      const holder = el("div", { class: "chart-holder" });
      const unit = prettyUnit(curve.unit);
      grid.appendChild(
        el("figure", { class: "curve", "data-feature": curve.feature }, [
          el("figcaption", null, [el("strong", { text: curve.label }), unit ? ` (${unit})` : ""]),
          holder,
        ]),
      );
      addChart(() => drawCurve(holder, model, curve, response.probability));
    }
    section.appendChild(grid);
    redrawCharts();
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    if (span <= 0) return [lo];
    const raw = span / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => span / s <= count) || magnitude * 10;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(10)));
    return ticks;
  }

  function probabilityDomain(values, tiers) {
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const span = Math.max(hi - lo, 0.02);
    lo = Math.max(0, lo - span * 0.15);
    hi = Math.min(1, hi + span * 0.15);
    if (hi - lo < 0.02) hi = Math.min(1, lo + 0.02);
    return [lo, hi, tiers.filter((t) => t.lower > lo && t.lower < hi)];
  }

  function drawCurve(holder, model, curve, patientProbability) {
    if (curve.type === "numeric" || curve.type === "ordinal") drawNumericCurve(holder, model, curve, patientProbability);
    else drawCategoryCurve(holder, model, curve, patientProbability);
  }

  function drawNumericCurve(holder, model, curve, patientProbability) {
    const width = Math.max(240, holder.clientWidth || 300);
    const height = 180;
    const m = { left: 44, right: 14, top: 14, bottom: 36 };
    const values = curve.points.map((p) => p.value);
    const probs = curve.points.map((p) => p.probability);
    const v0 = Math.min(...values);
    const v1 = Math.max(...values) > v0 ? Math.max(...values) : v0 + 1;
    const [p0, p1, thresholds] = probabilityDomain([...probs, patientProbability], model.tiers);
    const x = (v) => m.left + ((v - v0) / (v1 - v0)) * (width - m.left - m.right);
    const y = (p) => height - m.bottom - ((p - p0) / (p1 - p0)) * (height - m.top - m.bottom);
    const parts = [];
    const range = curve.training_range;
    if (range) {
      if (v0 < range[0]) parts.push(svg("rect", { x: x(v0), y: m.top, width: x(range[0]) - x(v0), height: height - m.top - m.bottom, class: "outside-range" }));
      if (v1 > range[1]) parts.push(svg("rect", { x: x(range[1]), y: m.top, width: x(v1) - x(range[1]), height: height - m.top - m.bottom, class: "outside-range" }));
    }
    for (const p of niceTicks(p0 * 100, p1 * 100, 4).map((v) => v / 100)) {
      parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: y(p), y2: y(p), class: "grid" }));
      parts.push(svg("text", { x: m.left - 6, y: y(p) + 4, "text-anchor": "end", class: "tick-label", text: pctShort(p) }));
    }
    for (const tier of thresholds) {
      parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: y(tier.lower), y2: y(tier.lower), class: "threshold-line" }));
      parts.push(svg("text", { x: width - m.right - 2, y: y(tier.lower) - 3, "text-anchor": "end", class: "threshold-label", text: `${shortTierLabel(tier)} ≥ ${pctShort(tier.lower)}` }));
    }
    const xTicks = niceTicks(v0, v1, Math.max(3, Math.floor((width - 60) / 70)));
    for (const v of xTicks) {
      parts.push(svg("line", { x1: x(v), x2: x(v), y1: height - m.bottom, y2: height - m.bottom + 4, class: "axis" }));
      parts.push(svg("text", { x: x(v), y: height - m.bottom + 16, "text-anchor": "middle", class: "tick-label", text: num(v) }));
    }
    parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: "axis" }));
    parts.push(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: "axis" }));
    const path = curve.points.map((p, k) => `${k ? "L" : "M"}${x(p.value).toFixed(1)},${y(p.probability).toFixed(1)}`).join(" ");
    parts.push(svg("path", { d: path, class: "curve-line" }));
    const spec = specOf(model, curve.feature);
    let description;
    if (curve.current_value === null) {
      parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: y(patientProbability), y2: y(patientProbability), class: "patient-missing" }));
      parts.push(svg("text", { x: m.left + 4, y: y(patientProbability) - 4, class: "marker-label", text: `missing → ${pct(patientProbability)}` }));
      description = "this patient's value is missing";
    } else {
      const cx = x(curve.current_value);
      const cy = y(patientProbability);
      parts.push(svg("line", { x1: cx, x2: cx, y1: cy, y2: height - m.bottom, class: "patient-drop" }));
      parts.push(svg("circle", { cx, cy, r: 5.5, class: "patient-point" }));
      const text = `${spec ? describeValue(spec, curve.current_value) : num(curve.current_value)} → ${pct(patientProbability)}`;
      const anchor = cx > width * 0.6 ? "end" : "start";
      const above = cy > m.top + 24;
      parts.push(svg("text", { x: cx + (anchor === "end" ? -8 : 8), y: above ? cy - 9 : cy + 16, "text-anchor": anchor, class: "marker-label", text }));
      description = `this patient ${text}`;
    }
    const first = curve.points[0];
    const lastPoint = curve.points[curve.points.length - 1];
    clear(holder).appendChild(
      svg(
        "svg",
        {
          width,
          height,
          viewBox: `0 0 ${width} ${height}`,
          role: "img",
          class: "curve-svg",
          "aria-label": `${curve.label}: risk ${pct(first.probability)} at ${first.label}, ${pct(lastPoint.probability)} at ${lastPoint.label}; ${description}.`,
        },
        parts,
      ),
    );
  }

  function drawCategoryCurve(holder, model, curve, patientProbability) {
    const width = Math.max(240, holder.clientWidth || 300);
    const rowHeight = 22;
    const top = 8;
    const bottom = 26;
    const height = top + curve.points.length * rowHeight + bottom;
    const labelWidth = Math.min(180, width * 0.45);
    const x0 = labelWidth + 10;
    const x1 = width - 14;
    const [p0, p1, thresholds] = probabilityDomain([...curve.points.map((p) => p.probability), patientProbability], model.tiers);
    const x = (p) => x0 + ((p - p0) / (p1 - p0)) * (x1 - x0);
    const parts = [];
    for (const p of niceTicks(p0 * 100, p1 * 100, 3).map((v) => v / 100)) {
      parts.push(svg("line", { x1: x(p), x2: x(p), y1: top, y2: height - bottom, class: "grid" }));
      parts.push(svg("text", { x: x(p), y: height - bottom + 16, "text-anchor": "middle", class: "tick-label", text: pctShort(p) }));
    }
    for (const tier of thresholds) {
      parts.push(svg("line", { x1: x(tier.lower), x2: x(tier.lower), y1: top, y2: height - bottom, class: "threshold-line" }));
    }
    parts.push(svg("line", { x1: x(patientProbability), x2: x(patientProbability), y1: top, y2: height - bottom, class: "patient-drop" }));
    curve.points.forEach((point, i) => {
      const cy = top + i * rowHeight + rowHeight / 2;
      const current = curve.current_value !== null && point.value === curve.current_value;
      parts.push(
        svg("g", { class: current ? "category current" : "category" }, [
          svg("title", { text: `${point.label}${current ? " (this patient)" : ""}: ${pct(point.probability)}` }),
          svg("text", { x: labelWidth, y: cy + 4, "text-anchor": "end", class: current ? "row-label strong" : "row-label", text: fitText(point.label, labelWidth - 4, 6.6) }),
          svg("line", { x1: x(patientProbability), x2: x(point.probability), y1: cy, y2: cy, class: "lollipop" }),
          svg("circle", { cx: x(point.probability), cy, r: current ? 6 : 4.5, class: current ? "patient-point" : "category-point" }),
        ]),
      );
    });
    clear(holder).appendChild(
      svg(
        "svg",
        {
          width,
          height,
          viewBox: `0 0 ${width} ${height}`,
          role: "img",
          class: "curve-svg",
          "aria-label": `${curve.label}: ${curve.points.map((p) => `${p.label}${p.value === curve.current_value ? " (this patient)" : ""} ${pct(p.probability)}`).join(", ")}.`,
        },
        parts,
      ),
    );
  }

  /* ------------------------------------------------ what if */

  function renderWhatIf(model, result) {
    // Only what a patient and clinician can change: "what if she were 10 years younger" is not a choice.
    const modifiable = model.features.filter((f) => f.modifiable);
    if (!modifiable.length) {
      return el("section", { class: "whatif", "aria-labelledby": "whatif-heading" }, [
        el("h3", { id: "whatif-heading", text: "What if…" }),
        el("p", { class: "section-note", id: "whatif-none", text: "None of this model's inputs is a modifiable risk factor, so no what-if comparison is offered." }),
      ]);
    }
    const select = el("select", { id: "whatif-feature" }, modifiable.map((f) => el("option", { value: f.name, text: (choicesOf(f) && f.type !== "categorical" ? choicesOf(f).title : f.label) })));
    const slot = el("div", { class: "whatif-value", id: "whatif-value" });
    const output = el("div", { class: "whatif-result", id: "whatif-result", "aria-live": "polite" });
    const button = el("button", { type: "button", class: "button primary", id: "whatif-run", text: "Compare" });
    select.addEventListener("change", () => buildWhatIfControl(model, select.value, slot));
    button.addEventListener("click", () => runWhatIf(model, select.value, output, button));
    buildWhatIfControl(model, select.value, slot);
    return el("section", { class: "whatif", "aria-labelledby": "whatif-heading" }, [
      el("h3", { id: "whatif-heading", text: "What if…" }),
      el("p", { class: "section-note", text: "Change one input and compare the new risk with the current one. The form above is not changed." }),
      el("div", { class: "whatif-controls" }, [
        el("div", { class: "whatif-pick" }, [el("label", { for: "whatif-feature", text: "Input to change" }), select]),
        slot,
        button,
      ]),
      output,
    ]);
  }

  function buildWhatIfControl(model, name, slot) {
    const spec = specOf(model, name);
    const current = state.features ? state.features[name] : null;
    clear(slot);
    slot.appendChild(el("label", { for: "whatif-input", text: "New value" }));
    let control;
    const choices = choicesOf(spec);
    if (spec.type === "binary") {
      const flipped = current === null ? "" : String(1 - Number(current));
      const options = choices ? choices.options : [["1", "Yes"], ["0", "No"]];
      control = el("select", { id: "whatif-input" }, options.map(([code, text]) => el("option", { value: String(code), text, selected: flipped === String(code) })));
    } else if (choices && spec.type !== "categorical") {
      control = el("select", { id: "whatif-input" }, choices.options.map(([code, text]) => el("option", { value: String(code), text, selected: String(code) === String(current) })));
    } else if (spec.type === "categorical") {
      control = el("select", { id: "whatif-input" }, spec.categories.map((c) => el("option", { value: c.code, text: c.label, selected: c.code === current })));
    } else {
      const currentValue = current && typeof current === "object" ? current.value : current;
      control = el("input", {
        id: "whatif-input",
        type: "number",
        step: spec.type === "ordinal" ? "1" : "any",
        min: spec.minimum,
        max: spec.maximum,
        value: currentValue === null || currentValue === undefined ? "" : String(currentValue),
      });
    }
    const row = el("div", { class: "input-row" }, control);
    if (spec.alternative_units && spec.alternative_units.length) {
      const enteredUnit = current && typeof current === "object" ? current.unit : spec.unit;
      const unitSelect = el(
        "select",
        { id: "whatif-unit", class: "unit-select", "aria-label": `Unit for the new ${spec.label}` },
        [spec.unit, ...spec.alternative_units.map((u) => u.unit)].map((u) =>
          el("option", { value: u, text: prettyUnit(u), selected: enteredUnit === u }),
        ),
      );
      unitSelect.addEventListener("change", () => applyUnitLimits(spec, control, unitSelect.value));
      applyUnitLimits(spec, control, unitSelect.value || spec.unit);
      row.appendChild(unitSelect);
    } else if (prettyUnit(spec.unit) && spec.type !== "binary" && spec.type !== "categorical") {
      row.appendChild(el("span", { class: "unit", text: prettyUnit(spec.unit) }));
    }
    slot.appendChild(row);
  }

  async function runWhatIf(model, name, output, button) {
    if (!state.features || !state.result) return;
    if ($("result").dataset.stale === "true") {
      // A comparison against a result the form no longer matches would mislead twice over.
      clear(output).appendChild(el("p", { class: "alert error", role: "alert", id: "whatif-stale", text: "The result above is out of date: press Calculate risk first, then compare." }));
      return;
    }
    const spec = specOf(model, name);
    const control = $("whatif-input");
    if (control.value === "" || !control.checkValidity()) {
      clear(output).appendChild(el("p", { class: "alert error", role: "alert", text: `Enter a valid new value for ${spec.label}${control.validationMessage ? `: ${control.validationMessage}` : ""}.` }));
      return;
    }
    let value;
    if (spec.type === "categorical") value = control.value;
    else if (spec.type === "binary" || control.tagName === "SELECT") value = Number(control.value);
    else {
      value = Number(control.value);
      const unit = $("whatif-unit");
      if (unit && unit.value !== spec.unit) value = { value, unit: unit.value };
    }
    // Related inputs the new value fixes (a non-smoker smokes no cigarettes a day), per the manifest.
    const implied = (spec.implies && spec.implies[String(typeof value === "object" ? value.value : value)]) || {};
    const features = { ...state.features, ...implied, [name]: value };
    const serial = state.requestSerial;
    const before = state.result;
    button.disabled = true;
    try {
      const after = await api("POST", `/v1/models/${encodeURIComponent(model.name)}/predict`, { features });
      if (serial !== state.requestSerial) return;
      renderWhatIfResult(model, spec, before, after, features[name], output, implied);
    } catch (error) {
      if (serial !== state.requestSerial) return;
      clear(output).appendChild(el("p", { class: "alert error", role: "alert", text: explainError(error) }));
    } finally {
      button.disabled = false;
    }
  }

  function enteredText(spec, raw, canonical) {
    if (raw && typeof raw === "object") return `${num(raw.value)} ${prettyUnit(raw.unit)}`;
    return describeValue(spec, raw === undefined ? canonical : raw);
  }

  function renderWhatIfResult(model, spec, before, after, newRaw, output, implied) {
    const also = Object.entries(implied || {}).map(([feature, v]) => {
      const other = specOf(model, feature);
      return other ? `${other.label} ${describeValue(other, v)}` : `${feature} ${v}`;
    });
    const oldContribution = before.explanation.contributions.find((c) => c.feature === spec.name);
    const oldText = enteredText(spec, state.features[spec.name], oldContribution ? oldContribution.value : null);
    const newText = enteredText(spec, newRaw, null);
    const diff = (after.probability - before.probability) * 100;
    const diffText = `${diff >= 0 ? "+" : "−"}${Math.abs(diff).toFixed(1)} percentage points`;
    const column = (heading, id, result, valueText, extra) =>
      el("div", { class: `compare-col ${extra}` }, [
        el("span", { class: "compare-heading", text: heading }),
        el("span", { class: "compare-probability", id, "data-probability": String(result.probability), text: pct(result.probability) }),
        el("span", { class: `tier-badge small tier-${tierIndex(model, result.tier.name)}-of-${model.tiers.length}`, text: result.tier.label }),
        el("span", { class: "compare-value", text: `${spec.label}: ${valueText}` }),
      ]);
    const scaleHolder = el("div", { class: "chart-holder" });
    const flags = after.data_quality.out_of_training_range.filter((o) => o.feature === spec.name);
    append(clear(output), [
      el("div", { class: "compare" }, [
        column("Now", "whatif-before", before, oldText, "now"),
        el("div", { class: "compare-arrow", "aria-hidden": "true", text: "→" }),
        column("What if", "whatif-after", after, newText, "then"),
      ]),
      el("p", { class: "compare-diff", id: "whatif-diff", text: `Change: ${diffText}${after.tier.name !== before.tier.name ? `; tier changes from ${shortTierLabel(before.tier)} to ${shortTierLabel(after.tier)}` : ""}.` }),
      also.length ? el("p", { class: "section-note", id: "whatif-also", "data-features": Object.keys(implied).join(" "), text: `Also changed to stay consistent: ${also.join("; ")}.` }) : null,
      flags.length ? el("p", { class: "alert warning", text: `${spec.label} ${newText} is outside the training range; treat this comparison with caution.` }) : null,
      scaleHolder,
      el("p", { class: "section-note", text: "An association in the model, not a promise: changing a risk factor may not change risk by this much." }),
    ]);
    const draw = () =>
      drawTierScale(scaleHolder, model.tiers, [
        { p: before.probability, label: `Now ${pct(before.probability)}`, kind: "now" },
        { p: after.probability, label: `What if ${pct(after.probability)}`, kind: "whatif" },
      ]);
    addChart(draw);
    draw();
  }

  /* ---------------------------------------------------------------- model page */

  const KIND_WORDS = { logistic: "logistic regression", xgboost: "gradient-boosted trees (XGBoost)", equation: "published risk equation" };
  const METHOD_WORDS = { linear: "exact linear", tree_shap: "exact TreeSHAP", equation: "exact, on the equation's own scale" };

  function renderModelPage(detail) {
    const body = clear($("model-body"));
    state.modelRedraw = null;
    if (!detail.validation) {
      // A published equation: no local test split; its card cites the papers it comes from.
      append(body, [
        renderModelHeader(detail),
        el("p", { class: "alert warning", id: "no-local-validation", text: "Published equation: not validated on local data here. Its card cites the publications and their validation." }),
        renderCardPanel(detail),
      ]);
      return;
    }
    const test = detail.validation.test;
    const v = detail.validation;
    body.appendChild(renderModelHeader(detail));
    body.appendChild(
      el("div", { class: "metric-cards" }, [
        el("div", { class: "metric-card", id: "auroc-card" }, [
          el("h3", { text: "Discrimination (AUROC)" }),
          el("p", { class: "metric-big", id: "auroc-value", text: test.auroc.toFixed(3) }),
          el("p", { class: "metric-sub", id: "auroc-ci", text: `95% CI ${test.auroc_ci_low.toFixed(3)} – ${test.auroc_ci_high.toFixed(3)}` }),
          ciBar(test),
        ]),
        el("div", { class: "metric-card" }, [
          el("h3", { text: "Test patients" }),
          el("p", { class: "metric-big", text: test.n.toLocaleString("en-GB") }),
          el("p", { class: "metric-sub", text: `${test.positives.toLocaleString("en-GB")} with the outcome (${pct(test.prevalence)}); never used for fitting.` }),
        ]),
        el("div", { class: "metric-card" }, [
          el("h3", { text: "Calibration" }),
          el("p", { class: "metric-big", text: `slope ${test.calibration_slope.toFixed(2)}` }),
          el("p", { class: "metric-sub", text: `intercept ${test.calibration_intercept.toFixed(2)} · ECE ${test.ece.toFixed(3)} · Brier ${test.brier.toFixed(3)}` }),
        ]),
        el("div", { class: "metric-card" }, [
          el("h3", { text: "AUPRC" }),
          el("p", { class: "metric-big", text: test.auprc.toFixed(3) }),
          el("p", { class: "metric-sub", text: `versus ${test.prevalence.toFixed(3)} for an uninformative score` }),
        ]),
      ]),
    );
    if (v.shortfalls.length) {
      body.appendChild(
        el("div", { class: "alert warning" }, [el("h3", { text: "Where this model falls short" }), el("ul", null, v.shortfalls.map((s) => el("li", { text: s })))]),
      );
    }
    const calibrationHolder = el("div", { class: "chart-holder" });
    body.appendChild(
      el("div", { class: "model-grid" }, [
        el("section", { class: "panel", "aria-labelledby": "calibration-heading" }, [
          el("h3", { id: "calibration-heading", text: "Calibration on the test set" }),
          el("p", { class: "section-note", text: "Test patients in groups ordered by predicted risk: mean predicted risk against the observed rate. On the diagonal = well calibrated." }),
          calibrationHolder,
          el("details", { class: "table-details" }, [
            el("summary", { text: "Calibration groups as a table" }),
            table(["Group", "Patients", "Predicted", "Observed"], test.calibration_bins.map((b, i) => [String(i + 1), b.n.toLocaleString("en-GB"), pct(b.mean_predicted), pct(b.observed_rate)])),
          ]),
        ]),
        el("section", { class: "panel", "aria-labelledby": "tiers-heading" }, [
          el("h3", { id: "tiers-heading", text: "Risk tiers on the test set" }),
          el("p", { class: "section-note", text: "For the rule “flag at or above this tier's lower bound”." }),
          table(
            ["Tier", "From", "Action", "Sensitivity", "Specificity", "PPV", "Flagged"],
            detail.tiers.map((tier) => {
              const metrics = v.tiers.find((t) => t.tier === tier.name);
              const f = (x) => (x === null || x === undefined ? "—" : pct(x));
              return [tier.label, pctShort(tier.lower), tier.action, f(metrics && metrics.sensitivity), f(metrics && metrics.specificity), f(metrics && metrics.ppv), f(metrics && metrics.flagged_fraction)];
            }),
          ),
        ]),
      ]),
    );
    body.appendChild(
      el("section", { class: "panel", "aria-labelledby": "subgroups-heading" }, [
        el("h3", { id: "subgroups-heading", text: "Subgroups" }),
        el("p", { class: "section-note", text: `Overall test AUROC ${test.auroc.toFixed(3)}; rows marked ▼ are more than 0.05 lower.` }),
        table(
          ["Factor", "Level", "Patients", "Events", "AUROC", "Calibration slope", "Predicted", "Observed"],
          v.subgroups.map((s) => [
            s.factor,
            s.level,
            s.n.toLocaleString("en-GB"),
            s.positives.toLocaleString("en-GB"),
            s.auroc === null ? "—" : `${s.auroc.toFixed(3)}${s.auroc < test.auroc - 0.05 ? " ▼" : ""}`,
            s.calibration_slope === null ? "—" : s.calibration_slope.toFixed(2),
            pct(s.mean_predicted),
            pct(s.observed_rate),
          ]),
          "subgroup-table",
        ),
      ]),
    );
    if (v.baselines.length) {
      body.appendChild(
        el("section", { class: "panel", "aria-labelledby": "baselines-heading" }, [
          el("h3", { id: "baselines-heading", text: "Compared with simpler or published scores" }),
          table(
            ["Baseline", "AUROC (95% CI)", "Difference vs shipped"],
            v.baselines.map((b) => [
              b.name,
              `${b.auroc.toFixed(3)} (${b.auroc_ci_low.toFixed(3)}–${b.auroc_ci_high.toFixed(3)})`,
              b.auroc_difference_vs_shipped === null ? "—" : `${b.auroc_difference_vs_shipped >= 0 ? "+" : ""}${b.auroc_difference_vs_shipped.toFixed(3)}${b.difference_p_value === null ? "" : ` (p ${b.difference_p_value < 0.001 ? "< 0.001" : `= ${b.difference_p_value.toFixed(3)}`})`}`,
            ]),
          ),
        ]),
      );
    }
    body.appendChild(renderCardPanel(detail));
    state.modelRedraw = () => {
      if (!$("model-view").hidden) drawCalibration(calibrationHolder, test.calibration_bins);
    };
  }

  function renderModelHeader(detail) {
    return el("header", { class: "model-header" }, [
      el("h2", { id: "model-title", text: detail.title }),
      el("p", { class: "meta" }, [
        el("strong", { text: `${detail.name} ${detail.version}` }),
        ` · ${KIND_WORDS[detail.kind] || detail.kind}`,
        ` · explanations: ${METHOD_WORDS[detail.explanation_method] || detail.explanation_method}`,
        ` · created ${detail.created_at.slice(0, 10)}`,
        ` · sha256 ${detail.sha256.slice(0, 12)}…`,
      ]),
      renderClinicalUse(clinicalUseOf(detail), "model-use-status"),
      el("p", { text: detail.summary }),
      el("p", null, [el("strong", { text: "Intended use: " }), detail.intended_use]),
    ]);
  }

  function renderCardPanel(detail) {
    const card = el("article", { class: "markdown", id: "model-card" });
    card.appendChild(renderMarkdown(detail.card_markdown, 2));
    return el("section", { class: "panel card-panel", "aria-labelledby": "card-heading" }, [
      el("h2", { id: "card-heading", text: "Model card" }),
      card,
    ]);
  }

  function table(headers, rows, cls) {
    return el("div", { class: "table-wrap" }, [
      el("table", { class: cls || null }, [
        el("thead", null, el("tr", null, headers.map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", null, rows.map((r) => el("tr", null, r.map((c) => el("td", { text: c }))))),
      ]),
    ]);
  }

  function ciBar(test) {
    const width = 220;
    const x = (a) => 10 + ((a - 0.5) / 0.5) * (width - 20);
    return svg("svg", { width, height: 34, viewBox: `0 0 ${width} 34`, role: "img", class: "ci-svg", "aria-label": `AUROC ${test.auroc.toFixed(3)} on a scale from 0.5 (chance) to 1 (perfect), 95% CI ${test.auroc_ci_low.toFixed(3)} to ${test.auroc_ci_high.toFixed(3)}` }, [
      svg("line", { x1: x(0.5), x2: x(1), y1: 12, y2: 12, class: "axis" }),
      svg("line", { x1: x(test.auroc_ci_low), x2: x(test.auroc_ci_high), y1: 12, y2: 12, class: "ci-range" }),
      svg("circle", { cx: x(test.auroc), cy: 12, r: 4.5, class: "patient-point" }),
      svg("text", { x: x(0.5), y: 30, "text-anchor": "start", class: "tick-label", text: "0.5 chance" }),
      svg("text", { x: x(1), y: 30, "text-anchor": "end", class: "tick-label", text: "1.0" }),
    ]);
  }

  function drawCalibration(holder, bins) {
    const width = Math.min(460, Math.max(260, holder.clientWidth || 420));
    const height = Math.round(width * 0.8);
    const m = { left: 48, right: 14, top: 12, bottom: 40 };
    const top = Math.max(...bins.map((b) => Math.max(b.mean_predicted, b.observed_rate)));
    const rough = niceTicks(0, Math.min(1, top * 1.02) * 100, 5);
    const step = rough.length > 1 ? rough[1] - rough[0] : 10;
    const maximum = Math.min(1, (Math.ceil((top * 102) / step) * step) / 100);
    const ticks = niceTicks(0, maximum * 100, 5);
    const x = (p) => m.left + (p / maximum) * (width - m.left - m.right);
    const y = (p) => height - m.bottom - (p / maximum) * (height - m.top - m.bottom);
    const parts = [];
    for (const t of ticks.map((v) => v / 100)) {
      parts.push(svg("line", { x1: x(t), x2: x(t), y1: m.top, y2: height - m.bottom, class: "grid" }));
      parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: y(t), y2: y(t), class: "grid" }));
      parts.push(svg("text", { x: x(t), y: height - m.bottom + 16, "text-anchor": "middle", class: "tick-label", text: pctShort(t) }));
      parts.push(svg("text", { x: m.left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick-label", text: pctShort(t) }));
    }
    parts.push(svg("line", { x1: x(0), y1: y(0), x2: x(maximum), y2: y(maximum), class: "diagonal" }));
    parts.push(svg("line", { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: "axis" }));
    parts.push(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: "axis" }));
    parts.push(svg("path", { d: bins.map((b, k) => `${k ? "L" : "M"}${x(b.mean_predicted).toFixed(1)},${y(b.observed_rate).toFixed(1)}`).join(" "), class: "calibration-line" }));
    for (const b of bins) {
      parts.push(
        svg("circle", { cx: x(b.mean_predicted), cy: y(b.observed_rate), r: 4.5, class: "calibration-point" }, [
          svg("title", { text: `${b.n} patients: predicted ${pct(b.mean_predicted)}, observed ${pct(b.observed_rate)}` }),
        ]),
      );
    }
    parts.push(svg("text", { x: (m.left + width - m.right) / 2, y: height - 6, "text-anchor": "middle", class: "axis-title", text: "Predicted risk" }));
    parts.push(svg("text", { x: 12, y: (m.top + height - m.bottom) / 2, "text-anchor": "middle", class: "axis-title", transform: `rotate(-90 12 ${(m.top + height - m.bottom) / 2})`, text: "Observed rate" }));
    clear(holder).appendChild(
      svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "calibration-svg", "aria-label": `Calibration plot with ${bins.length} groups; the table below lists them.` }, parts),
    );
  }

  /* ---------------------------------------------------------------- SMART EHR launch */

  function base64Url(bytes) {
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  const randomToken = (bytes) => base64Url(crypto.getRandomValues(new Uint8Array(bytes)));

  async function pkceChallenge(verifier) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
    return base64Url(new Uint8Array(digest));
  }

  // The registered redirect URI: this page's own address, without query or hash.
  const redirectUri = () => `${location.origin}/ui`;

  // The two launch calls carry no credentials: the launch is what proves who is calling.
  async function launchCall(path, body) {
    const init = {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    };
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, { title: "Network error", detail: "The service could not be reached." });
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // While a launch is under way the API key field is hidden (no key is needed); when it fails,
  // it comes back: the stand-alone mode stays available.
  function launchMessage(text, isError) {
    const holder = $("launch-status");
    $("key-panel").hidden = !isError;
    holder.hidden = false;
    holder.textContent = text;
    holder.className = isError ? "launch-status error" : "launch-status";
  }

  function problemText(error) {
    const first = error.problem && error.problem.errors && error.problem.errors[0];
    return first && first.field ? `${error.message} (${first.field}: ${first.message})` : error.message;
  }

  // Step 1 (EHR launch): the EHR opened /ui?iss=…&launch=…. The service says whether it trusts
  // `iss` (nothing is sent to an unknown server), then the user goes to the EHR's sign-in.
  async function smartLaunch(iss, launch) {
    history.replaceState(null, "", location.pathname); // iss and launch leave the address
    launchMessage("Connecting to your EHR…", false);
    let config;
    try {
      config = await launchCall("/ui/smart/launch", { iss });
    } catch (error) {
      launchMessage(`This launch was refused: ${problemText(error)}`, true);
      return;
    }
    const verifier = randomToken(48);
    const pending = { state: randomToken(24), verifier, iss };
    sessionStorage.setItem(SMART_PENDING, JSON.stringify(pending));
    const params = new URLSearchParams({
      response_type: "code",
      client_id: config.client_id,
      redirect_uri: redirectUri(),
      launch,
      scope: config.scope,
      state: pending.state,
      aud: config.aud,
      code_challenge: await pkceChallenge(verifier),
      code_challenge_method: "S256",
    });
    location.assign(`${config.authorization_endpoint}?${params}`);
  }

  // Step 2: the EHR sent the user back with ?code&state (or ?error). The state must be the one
  // this tab sent: anything else could be someone else's sign-in (login CSRF) and is refused.
  async function smartReturn(params) {
    history.replaceState(null, "", location.pathname); // the code leaves the address at once
    const saved = sessionStorage.getItem(SMART_PENDING);
    sessionStorage.removeItem(SMART_PENDING);
    let pending = null;
    try {
      pending = JSON.parse(saved);
    } catch (error) {
      pending = null;
    }
    if (params.get("error")) {
      launchMessage(`The EHR did not authorise this page (${params.get("error").slice(0, 60)}). Launch it again from the EHR.`, true);
      return;
    }
    if (!pending || !pending.state || params.get("state") !== pending.state) {
      launchMessage(
        "Sign-in refused: the answer does not belong to a launch started in this tab (state mismatch). Launch the page again from the EHR.",
        true,
      );
      return;
    }
    launchMessage("Reading the patient's chart…", false);
    let answer;
    try {
      answer = await launchCall("/ui/smart/session", {
        iss: pending.iss,
        code: params.get("code"),
        code_verifier: pending.verifier,
        redirect_uri: redirectUri(),
      });
    } catch (error) {
      launchMessage(`The launch could not be completed: ${problemText(error)}`, true);
      return;
    }
    state.smart = { ehr: answer.ehr, patient: answer.patient, models: answer.models, expires: answer.session.expires_at };
    // The model the launch asked for (a CDS Hooks card's link), else the address's or the first.
    if (answer.model) history.replaceState(null, "", `${location.pathname}#score/${answer.model}`);
    $("launch-status").hidden = true;
    $("key-panel").hidden = false;
    $("patient-id").value = answer.patient.id || "";
    $("patient-name").value = answer.patient.name || "";
    await connect(answer.session.token, true);
  }

  function showLaunch() {
    const until = new Date(state.smart.expires);
    const time = until.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
    $("key-status").textContent = `Launched from ${state.smart.ehr} · session until ${time}`;
    $("key-forget").textContent = "End session";
    $("launch-banner").hidden = false;
    $("launch-ehr").textContent = state.smart.ehr;
  }

  const shownDate = (iso) => (iso ? new Date(`${iso}T00:00:00Z`).toLocaleDateString("en-GB", { ...DATE_FORMAT, timeZone: "UTC" }) : "");

  // The chart's values for this model go into the form, each with where it came from; every
  // value stays editable (what-if), and an edited one says so next to its source.
  function applyChart(detail) {
    state.chartValues.clear();
    const chart = state.smart.models[detail.name];
    const notes = clear($("chart-notes"));
    notes.hidden = !chart;
    if (!chart) return;
    for (const spec of detail.features) {
      const id = fieldId(spec.name);
      const value = chart.features[spec.name];
      if (value !== undefined && value !== null) {
        if (spec.type === "binary") {
          const radio = $(`${id}-${Number(value) === 1 ? "1" : "0"}`);
          if (radio) radio.checked = true;
        } else {
          const unitSelect = $(`u-${spec.name}`);
          const unit = typeof value === "object" ? value.unit : spec.unit;
          if (unitSelect) {
            unitSelect.value = unit;
            applyUnitLimits(spec, $(id), unit);
          }
          // Charts store device precision (166.3956… mmHg); the form shows one decimal, as a
          // clinician reads the value (the source line names the observation it came from).
          const number = Number(typeof value === "object" ? value.value : value);
          $(id).value = spec.type === "categorical" ? String(value) : String(Number(number.toFixed(1)));
        }
      }
      state.chartValues.set(spec.name, JSON.stringify(readField(spec)));
      const field = document.querySelector(`[data-feature="${spec.name}"]`);
      const sources = chart.sources.filter((s) => s.feature === spec.name);
      if (!field || !sources.length) continue;
      const found = value !== undefined && value !== null;
      const text = sources.map((s) => (s.date ? `${s.text}, ${shownDate(s.date)}` : s.text)).join("; ");
      const references = sources.map((s) => s.reference).filter(Boolean).join(", ");
      const line = el("p", { class: found ? "chart-source" : "chart-source absent", "data-source-for": spec.name, title: references || null }, [
        el("span", { class: "chart-source-label", text: found ? "From the chart: " : "Not filled from the chart: " }),
        text,
        el("span", { class: "chart-edited", text: " · changed here (what-if)", hidden: true }),
      ]);
      field.insertBefore(line, field.querySelector(".hint"));
    }
    for (const [name, value] of Object.entries(chart.context || {})) {
      const radio = $(`c-${name}-${value ? "true" : "false"}`);
      if (radio) radio.checked = true;
    }
    const items = [...chart.warnings];
    if (chart.missing_required.length) {
      const labels = chart.missing_required.map((n) => (detail.features.find((f) => f.name === n) || { label: n }).label);
      items.unshift(`Not in the chart, needed to calculate: ${labels.join(", ")}.`);
    }
    notes.appendChild(el("p", { class: "chart-notes-title", text: `Filled from ${state.smart.ehr} for this patient. Check each value before you rely on the result.` }));
    if (items.length) notes.appendChild(el("ul", null, items.map((t) => el("li", { text: t }))));
  }

  function markEdited() {
    if (!state.smart || !state.model) return;
    for (const spec of state.model.features) {
      const marker = document.querySelector(`[data-source-for="${spec.name}"] .chart-edited`);
      if (marker) marker.hidden = JSON.stringify(readField(spec)) === state.chartValues.get(spec.name);
    }
  }

  /* ---------------------------------------------------------------- wiring */

  function init() {
    $("key-connect").addEventListener("click", () => {
      const key = $("api-key").value.trim();
      if (key) connect(key);
      else {
        $("key-status").textContent = "Paste an API key first.";
        $("api-key").focus();
      }
    });
    $("api-key").addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        $("key-connect").click();
      }
    });
    $("key-forget").addEventListener("click", forgetKey);
    $("model-select").addEventListener("change", (event) => selectModel(event.target.value, parseHash().view));
    $("patient-form").addEventListener("submit", submitPatient);
    $("patient-form").addEventListener("input", formChanged);
    $("patient-form").addEventListener("change", formChanged);
    $("patient-form").addEventListener("input", markEdited);
    $("patient-form").addEventListener("change", markEdited);
    $("patient-form").addEventListener("reset", () => {
      clearFieldErrors();
      if (state.sent) clearResult("Result cleared with the form.");
      setTimeout(() => {
        for (const spec of state.model ? state.model.features : []) {
          const unit = $(`u-${spec.name}`);
          if (unit) applyUnitLimits(spec, $(fieldId(spec.name)), unit.value);
        }
        markEdited();
      });
    });
    $("typical-button").addEventListener("click", fillTypical);
    window.addEventListener("hashchange", () => {
      if (!state.key || !state.model) return;
      const route = parseHash();
      if (route.model && route.model !== state.model.name && state.models.some((m) => m.name === route.model)) {
        $("model-select").value = route.model;
        selectModel(route.model, route.view).then(() => showView(route.view, true));
      } else {
        showView(route.view, true);
      }
    });
    let pending = null;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(redrawCharts, 120);
    });
    const today = new Date();
    $("today").dateTime = today.toISOString().slice(0, 10);
    $("today").textContent = today.toLocaleDateString("en-GB", DATE_FORMAT);
    const query = new URLSearchParams(location.search);
    if (query.has("iss") && query.has("launch")) smartLaunch(query.get("iss"), query.get("launch"));
    else if (query.has("code") || query.has("error")) smartReturn(query);
    else {
      const saved = sessionStorage.getItem(KEY_STORAGE);
      if (saved) connect(saved);
      else $("api-key").focus();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
