/* batchserver console: live pages, and the copy button of the one-time API key page. No framework.
 *
 * A page that wants to refresh itself carries <meta name="bs-refresh" content="SECONDS">. Every few seconds
 * the same URL (query string and all, so filters, search and page stay) is fetched again and each element
 * marked data-live="key" takes the content of its twin in the fresh page. Nothing else is touched: the
 * selection checkboxes, the action menu and the scroll position stay as they are. While rows are selected the
 * list waits. When the fresh page no longer asks for refreshing (the batch finished), it stops. */
'use strict';
function batchserverConsole() {
    const meta = document.querySelector('meta[name="bs-refresh"]');
    if (meta) {
        const every = Math.max(1, Number(meta.content) || 5) * 1000;
        let timer = null;

        const busy = () => document.querySelector('#result_list input.action-select:checked, #action-toggle:checked')
            || (document.activeElement && document.activeElement.closest('#changelist-form .actions'));

        const apply = (fresh) => {
            document.querySelectorAll('[data-live]').forEach((el) => {
                const twin = fresh.querySelector('[data-live="' + CSS.escape(el.dataset.live) + '"]');
                if (!twin) {
                    return;
                }
                // A region with a version (forms: their CSRF token differs on every render) changes only when
                // its version does, so a button is never swapped under the operator's pointer.
                const changed = twin.dataset.liveVersion !== undefined
                    ? twin.dataset.liveVersion !== el.dataset.liveVersion
                    : twin.innerHTML !== el.innerHTML;
                if (changed) {
                    el.innerHTML = twin.innerHTML;
                    if (twin.dataset.liveVersion !== undefined) {
                        el.dataset.liveVersion = twin.dataset.liveVersion;
                    }
                }
            });
            const stamp = document.querySelector('[data-bs-refreshed]');
            if (stamp) {
                stamp.textContent = 'Updated ' + new Date().toLocaleTimeString();
            }
        };

        const tick = async () => {
            timer = null;
            if (document.hidden || busy()) {
                schedule();
                return;
            }
            try {
                const response = await fetch(window.location.href, {
                    credentials: 'same-origin',
                    cache: 'no-store',
                    headers: {'X-Requested-With': 'XMLHttpRequest'},
                });
                if (response.ok && !response.redirected) {
                    const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
                    apply(fresh);
                    if (!fresh.querySelector('meta[name="bs-refresh"]')) {
                        document.documentElement.dataset.bsLive = 'done';
                        return; // finished: nothing will move any more
                    }
                }
            } catch (error) {
                // the server blinked; try again at the next tick
            }
            schedule();
        };
        const schedule = () => {
            if (!timer) {
                timer = window.setTimeout(tick, every);
            }
        };
        document.documentElement.dataset.bsLive = 'on';
        document.addEventListener('visibilitychange', () => { if (!document.hidden) { schedule(); } });
        schedule();
    }

    // Forms that change state ask first (delegated: live refreshes replace the forms).
    document.addEventListener('submit', (event) => {
        const form = event.target.closest('form[data-bs-confirm]');
        if (form && !window.confirm(form.dataset.bsConfirm)) {
            event.preventDefault();
        }
    });

    document.querySelectorAll('[data-bs-copy]').forEach((button) => {
        button.addEventListener('click', async () => {
            const input = document.getElementById(button.dataset.bsCopy);
            const done = document.getElementById(button.dataset.bsCopy + '-copied');
            try {
                await navigator.clipboard.writeText(input.value);
            } catch (error) {
                input.select();
                document.execCommand('copy');
            }
            if (done) {
                done.hidden = false;
            }
        });
    });
    document.querySelectorAll('input[data-bs-select-on-focus]').forEach((input) => {
        input.addEventListener('focus', () => input.select());
    });
}
if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', batchserverConsole);
} else {
    batchserverConsole();
}
