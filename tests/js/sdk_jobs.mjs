// PocketBase's own JavaScript SDK against the jobs HTTP API (run by
// tests/integration/test_jobs_js_sdk.py).
//
//   node sdk_jobs.mjs BASE_URL SUPERUSER_EMAIL SUPERUSER_PASSWORD
//
// The app must register the jobs plugin with enqueue_rule '@request.auth.id != ""', the
// default manage_rule (superusers only), allowed_topics ["sdk:echo", "sdk:other"], and a
// handler for "sdk:echo" that raises when the payload has {"fail": true}.
//
// Prints one JSON object on stdout describing what the SDK saw; the Python test asserts on
// it. Expected API errors are caught and reported in the JSON; anything unexpected (a
// network failure, an error where success was expected) exits with code 1 and a message
// on stderr.

import PocketBase, { ClientResponseError } from "pocketbase";

const [url, email, password] = process.argv.slice(2);
if (!url || !email || !password) {
    console.error("usage: node sdk_jobs.mjs BASE_URL EMAIL PASSWORD");
    process.exit(2);
}

// Runs `fn`, which must fail with a ClientResponseError; returns what the error carried.
async function expectApiError(what, fn) {
    try {
        await fn();
    } catch (err) {
        if (err instanceof ClientResponseError && err.status >= 400 && err.status < 500) {
            return {
                status: err.status,
                message: err.response?.message ?? null,
                data: err.response?.data ?? null,
                isClientResponseError: true,
            };
        }
        throw err;
    }
    throw new Error(`${what}: expected an API error, but the call succeeded`);
}

function enqueue(pb, body) {
    return pb.send("/api/jobs/enqueue", { method: "POST", body });
}

async function waitForStatus(pb, id, status, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const job = await pb.send(`/api/jobs/${encodeURIComponent(id)}`, {});
        if (job.status === status) {
            return job;
        }
        if (Date.now() > deadline) {
            throw new Error(`job ${id} never became ${status}: ${JSON.stringify(job)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
}

async function main() {
    const result = {};

    // -- a regular user (signed up through the SDK) ---------------------------------------
    const userEmail = `sdk-jobs-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.com`;
    const userPassword = "user-password-1234";
    const userPb = new PocketBase(url);
    await userPb.collection("users").create({
        email: userEmail,
        password: userPassword,
        passwordConfirm: userPassword,
    });
    await userPb.collection("users").authWithPassword(userEmail, userPassword);
    result.userIsSuperuser = userPb.authStore.isSuperuser;

    result.userJob = await enqueue(userPb, { topic: "sdk:echo", payload: { from: "user", n: 1 } });
    result.userStats = await expectApiError("user stats", () => userPb.send("/api/jobs/stats", {}));
    result.userList = await expectApiError("user list", () =>
        userPb.send("/api/jobs", { query: { limit: 5 } }),
    );
    result.userGet = await expectApiError("user get", () =>
        userPb.send(`/api/jobs/${result.userJob.id}`, {}),
    );
    result.userNotAllowedTopic = await expectApiError("topic not in allowed_topics", () =>
        enqueue(userPb, { topic: "not:allowed" }),
    );
    result.userEmptyTopic = await expectApiError("empty topic", () => enqueue(userPb, { topic: "" }));
    result.userBadRunAt = await expectApiError("bad run_at", () =>
        enqueue(userPb, { topic: "sdk:echo", run_at: "2025-01-08T12:00:00" }),
    );
    result.userQueues = await expectApiError("user queues", () => userPb.send("/api/jobs/queues", {}));
    result.userPause = await expectApiError("user pause", () =>
        userPb.send("/api/jobs/queues/mail/pause", { method: "POST" }),
    );
    result.userCancel = await expectApiError("user cancel", () =>
        userPb.send(`/api/jobs/${result.userJob.id}/cancel`, { method: "POST" }),
    );

    // -- a guest ---------------------------------------------------------------------------
    const guest = new PocketBase(url);
    result.guestEnqueue = await expectApiError("guest enqueue", () =>
        enqueue(guest, { topic: "sdk:echo" }),
    );
    result.guestStats = await expectApiError("guest stats", () => guest.send("/api/jobs/stats", {}));
    result.guestResume = await expectApiError("guest resume", () =>
        guest.send("/api/jobs/queues/mail/resume", { method: "POST" }),
    );
    result.guestCancel = await expectApiError("guest cancel", () =>
        guest.send(`/api/jobs/${result.userJob.id}/cancel`, { method: "POST" }),
    );
    result.openapi = await guest.send("/api/jobs/openapi.json", {});

    // -- a superuser -----------------------------------------------------------------------
    const pb = new PocketBase(url);
    await pb.collection("_superusers").authWithPassword(email, password);
    result.superIsSuperuser = pb.authStore.isSuperuser;

    result.superJob = await enqueue(pb, {
        topic: "sdk:other",
        payload: { from: "superuser", list: [1, 2, 3] },
        run_at: "2099-01-08T14:00:00+02:00",
        max_retries: 7,
    });
    result.userJobDone = await waitForStatus(pb, result.userJob.id, "completed");

    const failing = await enqueue(pb, { topic: "sdk:echo", payload: { fail: true }, max_retries: 0 });
    result.failed = await waitForStatus(pb, failing.id, "failed");
    result.stats = await pb.send("/api/jobs/stats", {});
    result.list = await pb.send("/api/jobs", { query: { limit: 2 } });
    result.listEcho = await pb.send("/api/jobs", { query: { topic: "sdk:echo", status: "completed" } });
    result.get = await pb.send(`/api/jobs/${result.superJob.id}`, {});
    result.requeued = await pb.send(`/api/jobs/${failing.id}/requeue`, { method: "POST" });
    result.requeueAgain = await expectApiError("requeue of a pending job", () =>
        pb.send(`/api/jobs/${result.superJob.id}/requeue`, { method: "POST" }),
    );
    result.deleteUnknown = await expectApiError("delete of an unknown job", () =>
        pb.send("/api/jobs/0190a8b2-0000-7000-8000-000000000000", { method: "DELETE" }),
    );
    result.schedules = await pb.send("/api/jobs/schedules", {});
    result.deleteUnknownSchedule = await expectApiError("delete of an unknown schedule", () =>
        pb.send("/api/jobs/schedules/nope", { method: "DELETE" }),
    );
    result.deleted = await pb.send(`/api/jobs/${result.superJob.id}`, { method: "DELETE" });
    result.getDeleted = await expectApiError("get of a deleted job", () =>
        pb.send(`/api/jobs/${result.superJob.id}`, {}),
    );
    result.badLimit = await expectApiError("limit=-1", () =>
        pb.send("/api/jobs", { query: { limit: -1 } }),
    );


    // -- named queues (after the counts above were taken) -----------------------------------
    result.queueJob = await enqueue(pb, {
        topic: "sdk:other", queue: "mail", delay: 3600, timeout: 90,
    });
    result.badQueue = await expectApiError("queue with a space", () =>
        enqueue(pb, { topic: "sdk:echo", queue: "no spaces" }),
    );
    result.listMail = await pb.send("/api/jobs", { query: { queue: "mail" } });
    result.paused = await pb.send("/api/jobs/queues/mail/pause", { method: "POST" });
    result.queues = await pb.send("/api/jobs/queues", {});
    result.resumed = await pb.send("/api/jobs/queues/mail/resume", { method: "POST" });
    result.badQueueName = await expectApiError("pause of a bad name", () =>
        pb.send(`/api/jobs/queues/${encodeURIComponent("a b")}/pause`, { method: "POST" }),
    );

    // -- cancel (the mail job: no worker here works on its queue) ---------------------------
    result.badTimeout = await expectApiError("timeout as text", () =>
        enqueue(pb, { topic: "sdk:echo", timeout: "soon" }),
    );
    result.statsBeforeCancel = await pb.send("/api/jobs/stats", {});
    const cancelPath = `/api/jobs/${result.queueJob.id}/cancel`;
    result.cancelled = await pb.send(cancelPath, { method: "POST" });
    result.cancelAgain = await pb.send(cancelPath, { method: "POST" });
    result.cancelCompleted = await expectApiError("cancel of a completed job", () =>
        pb.send(`/api/jobs/${result.userJob.id}/cancel`, { method: "POST" }),
    );
    result.cancelUnknown = await expectApiError("cancel of an unknown job", () =>
        pb.send("/api/jobs/0190a8b2-0000-7000-8000-000000000000/cancel", { method: "POST" }),
    );
    result.statsAfterCancel = await pb.send("/api/jobs/stats", {});
    result.listCancelled = await pb.send("/api/jobs", { query: { status: "cancelled" } });
    result.requeueCancelled = await pb.send(`/api/jobs/${result.queueJob.id}/requeue`, {
        method: "POST",
    });

    process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
    const detail = err instanceof ClientResponseError
        ? `ClientResponseError ${err.status} at ${err.url}: ${JSON.stringify(err.response)}`
        : (err?.stack ?? String(err));
    console.error(`sdk_jobs.mjs failed: ${detail}`);
    process.exit(1);
});
