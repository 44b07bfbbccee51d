"""Forms of the customer portal. Each error message states what to change."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm

from agents.models import Execution, Workflow
from billing.models import Plan
from portal import selectors

# The email address is also the username, whose column has 150 characters.
EMAIL_MAX_LENGTH = 150
PROMPT_MAX_LENGTH = 20_000


class EmailAuthenticationForm(AuthenticationForm):
    """Log in with the email address, in any letter case."""

    username = forms.CharField(
        label="Email",
        max_length=EMAIL_MAX_LENGTH,
        widget=forms.EmailInput(attrs={"autofocus": True, "autocomplete": "email"}),
    )
    error_messages = {
        "invalid_login": "The email address or password is not correct.",
        "inactive": "This account is disabled.",
    }

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        return username.lower() if "@" in username else username


class PasswordPairMixin:
    """Two password fields, checked against each other and the validators."""

    def clean_password2(self):
        first = self.cleaned_data.get("password1")
        second = self.cleaned_data.get("password2")
        if first and second and first != second:
            raise forms.ValidationError("The two passwords do not match.")
        return second

    def _validate_password(self, user) -> None:
        password = self.cleaned_data.get("password2")
        if not password:
            return
        try:
            password_validation.validate_password(password, user)
        except forms.ValidationError as error:
            self.add_error("password1", error)


class PlanChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Plan) -> str:
        return f"{obj.name}: {selectors.plan_summary(obj)}"


class SignupForm(PasswordPairMixin, forms.Form):
    company_name = forms.CharField(label="Company name", max_length=200)
    email = forms.EmailField(label="Work email", max_length=EMAIL_MAX_LENGTH)
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    plan = PlanChoiceField(
        queryset=Plan.objects.none(),
        empty_label=None,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a plan.",
            "invalid_choice": "Choose one of the plans listed.",
        },
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["plan"].queryset = selectors.plans_for_signup()

    def clean_email(self):
        email = self.cleaned_data["email"].strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(
                "An account with this email already exists. Log in, or reset "
                "the password if you forgot it."
            )
        return email

    def clean_company_name(self):
        name = self.cleaned_data["company_name"].strip()
        if not name:
            raise forms.ValidationError("Enter your company's name.")
        return name

    def clean(self):
        cleaned = super().clean()
        email = cleaned.get("email") or ""
        self._validate_password(get_user_model()(username=email, email=email))
        return cleaned


class InvitationSignupForm(PasswordPairMixin, forms.Form):
    password1 = SignupForm.base_fields["password1"]
    password2 = SignupForm.base_fields["password2"]

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        self._validate_password(get_user_model()(username=self.email, email=self.email))
        return cleaned


class ExecutionFilterForm(forms.Form):
    """Filters of the executions list, read from the query string."""

    status = forms.ChoiceField(
        choices=[("", "Any status"), *Execution.Status.choices], required=False
    )
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.order_by("name"),
        required=False,
        empty_label="Any workflow",
    )
    created_from = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    created_to = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("created_from"), cleaned.get("created_to")
        if start and end and end < start:
            self.add_error("created_to", "The end date is before the start date.")
        return cleaned


class ExecutionStartForm(forms.Form):
    workflow = forms.ModelChoiceField(
        queryset=Workflow.objects.none(),
        empty_label=None,
        error_messages={
            "required": "Choose a workflow.",
            "invalid_choice": "Choose one of the workflows listed.",
        },
    )
    prompt = forms.CharField(
        label="Input",
        max_length=PROMPT_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="What the agent should work on. It is added to the workflow's prompt.",
        error_messages={"required": "Enter the input for the agent."},
    )

    def __init__(self, *args, customer, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["workflow"].queryset = selectors.workflows_allowed(customer)

    def clean_prompt(self):
        prompt = self.cleaned_data["prompt"].strip()
        if not prompt:
            raise forms.ValidationError("Enter the input for the agent.")
        return prompt


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="A label to tell keys apart, e.g. the service that uses it.",
        error_messages={"required": "Give the key a name."},
    )


class InvitationForm(forms.Form):
    email = forms.EmailField(
        max_length=EMAIL_MAX_LENGTH,
        error_messages={"required": "Enter the email address to invite."},
    )
