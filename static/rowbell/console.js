// Behaviour of the console's pages, kept out of the HTML: the Content-Security-Policy runs no inline script.
document.addEventListener("DOMContentLoaded", function () {
  // A product chooser applies at once.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  // Review queue: "select all on this page".
  var all = document.getElementById("review-select-all");
  if (all) {
    all.addEventListener("click", function () {
      document.querySelectorAll("input[name=message_id]").forEach(function (box) { box.checked = all.checked; });
    });
  }
  // Review queue: a button on one message acts on that message alone.
  document.querySelectorAll("button.only-this").forEach(function (button) {
    button.addEventListener("click", function () {
      button.form.querySelectorAll("input[name=message_id]").forEach(function (box) {
        box.checked = box.value === button.dataset.id;
      });
    });
  });
});
