// The devops-callbacks console's only script. Every page works without it; it adds a
// confirmation before deletes and follows a recovery job's progress without reloading.
"use strict";

document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
});

// A recovery's progress: the share of its window's deliveries it has handled, (done + failed) /
// total, and 100 % once it is done, as the page itself computes it.
function percent(job) {
  if (job.state === "DONE") {
    return 100;
  }
  return job.total > 0 ? Math.floor(((job.done + job.failed) * 100) / job.total) : 0;
}

function follow(bar) {
  const text = document.getElementById("recovery-text");
  const poll = async () => {
    let job;
    try {
      const response = await fetch(bar.dataset.poll, { headers: { Accept: "application/json" } });
      if (!response.ok) {
        text.textContent = "Cannot read the job's progress (" + response.status + ").";
        return;
      }
      job = (await response.json()).data;
    } catch (error) {
      setTimeout(poll, 2000);
      return;
    }
    const share = percent(job);
    bar.value = share;
    bar.textContent = share + " %";
    text.textContent = share + " % · " + job.done + " of " + job.total + " re-queued, " +
      job.failed + " no longer waiting · " + job.state + (job.reason ? " (" + job.reason + ")" : "");
    bar.closest("section").dataset.state = job.state;
    if (job.state === "RUNNING") {
      setTimeout(poll, 500);
    }
  };
  poll();
}

const bar = document.getElementById("recovery-progress");
if (bar && bar.dataset.poll && bar.closest("section").dataset.state === "RUNNING") {
  follow(bar);
}
