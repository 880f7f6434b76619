"""Human approval: requests, four-eyes / N-of-M decisions, TTL expiry and resuming execution exactly once.

`breakdesk.approvals.service.ApprovalService` is the entry point for the API and the CLI;
`breakdesk.approvals.scheduler.Scheduler` is the worker loop that expires requests and resumes stalled runs.
"""
