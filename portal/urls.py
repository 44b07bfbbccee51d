from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from portal import forms, views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("signup/", views.signup, name="signup"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            form_class=forms.EmailAuthenticationForm,
            template_name="registration/login.html",
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path(
        "logout/",
        auth_views.LogoutView.as_view(next_page=reverse_lazy("portal:login")),
        name="logout",
    ),
    path(
        "password-reset/",
        auth_views.PasswordResetView.as_view(
            template_name="registration/password_reset_form.html",
            email_template_name="registration/password_reset_email.txt",
            subject_template_name="registration/password_reset_subject.txt",
            success_url=reverse_lazy("portal:password-reset-done"),
        ),
        name="password-reset",
    ),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="registration/password_reset_done.html"
        ),
        name="password-reset-done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="registration/password_reset_confirm.html",
            success_url=reverse_lazy("portal:password-reset-complete"),
        ),
        name="password-reset-confirm",
    ),
    path(
        "password-reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="registration/password_reset_complete.html"
        ),
        name="password-reset-complete",
    ),
    path("verify-email/<uidb64>/<token>/", views.verify_email, name="verify-email"),
    path("verify-email/resend/", views.verification_resend, name="verification-resend"),
    path("invitations/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("executions/", views.execution_list, name="execution-list"),
    path("executions/new/", views.execution_start, name="execution-start"),
    path(
        "executions/<int:execution_id>/",
        views.execution_detail,
        name="execution-detail",
    ),
    path(
        "executions/<int:execution_id>/events",
        views.execution_events,
        name="execution-events",
    ),
    path("api-keys/", views.api_key_list, name="api-keys"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("invoices/", views.invoices, name="invoices"),
    path("team/", views.team, name="team"),
    path(
        "team/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke,
        name="invitation-revoke",
    ),
]
