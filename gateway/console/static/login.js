// Login page: posts the form as JSON, shows refusals in the page's language.
"use strict";
(function () {
  let lang = window.cgLanguage(null);
  const t = (key, vars) => window.cgTranslate(lang, key, vars);

  function applyLanguage() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = t("login_title");
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  }

  function showError(text) {
    const box = document.getElementById("login-error");
    box.textContent = text;
    box.hidden = false;
  }

  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("cg-lang", lang);
    applyLanguage();
  });

  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("login-submit");
    button.disabled = true;
    document.getElementById("login-error").hidden = true;
    try {
      const response = await fetch("/console/api/login", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        credentials: "same-origin",
        body: JSON.stringify({
          user: document.getElementById("user").value.trim(),
          password: document.getElementById("password").value,
        }),
      });
      if (response.ok) {
        window.location.replace("/console/");
        return;
      }
      if (response.status === 429) {
        const body = await response.json().catch(() => ({}));
        showError(t("login_locked", {s: body.retry_after || 60}));
      } else if (response.status === 401) {
        showError(t("login_wrong"));
        document.getElementById("password").select();
      } else {
        showError(t("login_failed"));
      }
    } catch (err) {
      showError(t("login_failed"));
    } finally {
      button.disabled = false;
    }
  });

  applyLanguage();
})();
